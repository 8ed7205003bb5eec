"""ClusterReady and IdentityReady: the AKS cluster's workload identity, and the user-assigned identity."""

from __future__ import annotations

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import IdentityStatus
from amlwire.domain.cluster import check_cluster
from amlwire.domain.conditions import StepResult, blocked, done
from amlwire.domain.errors import AzureError, AzureNotFound
from amlwire.domain.failures import BY_ID
from amlwire.reconcile.attachedcompute.scope import Scope
from amlwire.reconcile.runner import step


@step(r.CLUSTER_READY)
def check_the_cluster(scope: Scope) -> StepResult:
    target = scope.target
    try:
        cluster = scope.azure.get_cluster(scope.spec.cluster_subscription_id, target.cluster_group, target.cluster_name)
    except AzureNotFound:
        scope.status.oidc_issuer = None
        return blocked(
            r.CLUSTER_READY,
            r.CLUSTER_NOT_FOUND,
            f"AKS cluster {target.cluster_group}/{target.cluster_name} does not exist in subscription "
            f"{scope.spec.cluster_subscription_id}; fix spec.cluster",
            scope.timings.blocked_recheck,
        )
    except AzureError as error:
        return scope.denied_or_missing(r.CLUSTER_READY, error, "spec.cluster")
    scope.observed.cluster = cluster
    scope.status.oidc_issuer = cluster.issuer_url if cluster.oidc_issuer_enabled else None
    return check_cluster(cluster, target.cluster_group, target.cluster_name, scope.timings.blocked_recheck)


@step(r.IDENTITY_READY)
def find_the_identity(scope: Scope) -> StepResult:
    rid = scope.target.identity
    try:
        identity = scope.azure.get_identity(scope.target.identity_id)
    except AzureNotFound:
        return blocked(
            r.IDENTITY_READY,
            r.IDENTITY_NOT_FOUND,
            f"user-assigned identity {rid.name} does not exist in resource group {rid.group} (subscription "
            f"{rid.subscription}); create it ({BY_ID['F03'].fix(group=rid.group, name=rid.name)})",
            scope.timings.blocked_recheck,
        )
    except AzureError as error:
        return scope.denied_or_missing(r.IDENTITY_READY, error, "spec.identity.resourceId")
    scope.observed.identity = identity
    scope.status.identity = IdentityStatus(
        resource_id=identity.id,
        client_id=identity.client_id,
        principal_id=identity.principal_id,
        tenant_id=identity.tenant_id,
    )
    return done(
        r.IDENTITY_READY, r.IDENTITY_FOUND, f"client ID {identity.client_id}, principal ID {identity.principal_id}"
    )
