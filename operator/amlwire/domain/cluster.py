"""The AKS cluster's side of workload identity: an OIDC issuer and the workload identity webhook."""

from __future__ import annotations

from amlwire.api import reasons as r
from amlwire.domain.azure import ClusterInfo
from amlwire.domain.conditions import StepResult, blocked, done
from amlwire.domain.failures import BY_ID


def check_cluster(cluster: ClusterInfo, group: str, name: str, recheck: float) -> StepResult:
    if not cluster.oidc_issuer_enabled or not cluster.issuer_url:
        return blocked(
            r.CLUSTER_READY,
            r.OIDC_ISSUER_DISABLED,
            f"AKS cluster {name} has no OIDC issuer, so Entra cannot trust its service-account tokens; "
            f"enable it: {BY_ID['F01'].fix(group=group, cluster=name)}",
            recheck,
        )
    if not cluster.workload_identity_enabled:
        return blocked(
            r.CLUSTER_READY,
            r.WORKLOAD_IDENTITY_DISABLED,
            f"AKS cluster {name} does not run the workload identity webhook, so pods get no federated "
            f"token; enable it: {BY_ID['F02'].fix(group=group, cluster=name)}",
            recheck,
        )
    if cluster.local_accounts_disabled:
        return blocked(
            r.CLUSTER_READY,
            r.LOCAL_ACCOUNTS_DISABLED,
            f"AKS cluster {name} has local accounts disabled (disableLocalAccounts), and the AzureML extension does "
            f"not support such clusters (Learn: deploy the AzureML extension, limitations): the attach would fail. "
            f"{BY_ID['F19'].fix(group=group, cluster=name)} (a security baseline may forbid it: then attach another "
            f"cluster); amlwire neither federates this cluster's service accounts nor attaches it meanwhile",
            recheck,
        )
    return done(
        r.CLUSTER_READY,
        r.WORKLOAD_IDENTITY_ENABLED,
        f"OIDC issuer {cluster.issuer_url} and workload identity are enabled.",
    )
