"""ClusterReady and IdentityReady: the AKS cluster's workload identity, and the user-assigned identity."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import IdentityStatus
from amlwire.domain.cluster import check_cluster
from amlwire.domain.conditions import StepResult, done
from amlwire.domain.errors import AzureError, AzureNotFound
from amlwire.domain.failures import BY_ID
from amlwire.reconcile.attachedcompute.scope import Scope
from amlwire.reconcile.runner import step

T = TypeVar("T")


def _read(scope: Scope, condition: str, field: str, read: Callable[[], T]) -> tuple[T | None, StepResult | None]:
    """What `read` returns (None when Azure has no such resource), or the result naming `field` when Azure
    refuses the read: a 403 also stands for a resource that does not exist."""
    try:
        return read(), None
    except AzureNotFound:
        return None, None
    except AzureError as error:
        return None, scope.denied_or_missing(condition, error, field)


@step(r.CLUSTER_READY)
def check_the_cluster(scope: Scope) -> StepResult:
    target = scope.target
    subscription = scope.spec.cluster_subscription_id
    cluster, refused = _read(
        scope,
        r.CLUSTER_READY,
        "spec.cluster",
        lambda: scope.azure.get_cluster(subscription, target.cluster_group, target.cluster_name),
    )
    if refused is not None:
        return refused
    if cluster is None:
        scope.status.oidc_issuer = None
        where = f"{target.cluster_group}/{target.cluster_name} does not exist in subscription {subscription}"
        return scope.blocked(r.CLUSTER_READY, r.CLUSTER_NOT_FOUND, f"AKS cluster {where}; fix spec.cluster")
    scope.observed.cluster = cluster
    scope.status.oidc_issuer = cluster.issuer_url if cluster.oidc_issuer_enabled else None
    return check_cluster(cluster, target.cluster_group, target.cluster_name, scope.timings.blocked_recheck)


@step(r.IDENTITY_READY)
def find_the_identity(scope: Scope) -> StepResult:
    rid = scope.target.identity
    field = "spec.identity.resourceId"
    identity, refused = _read(
        scope, r.IDENTITY_READY, field, lambda: scope.azure.get_identity(scope.target.identity_id)
    )
    if refused is not None:
        return refused
    if identity is None:
        fix = BY_ID["F03"].fix(group=rid.group, name=rid.name)
        where = f"resource group {rid.group} (subscription {rid.subscription})"
        message = f"user-assigned identity {rid.name} does not exist in {where}; create it ({fix})"
        return scope.blocked(r.IDENTITY_READY, r.IDENTITY_NOT_FOUND, message)
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
