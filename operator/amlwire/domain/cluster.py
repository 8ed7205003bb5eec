"""The AKS cluster's side of workload identity: an OIDC issuer and the workload identity webhook."""

from __future__ import annotations

from amlwire.domain.azure import ClusterInfo
from amlwire.domain.conditions import StepResult, blocked, done

CLUSTER_READY = "ClusterReady"


def check_cluster(cluster: ClusterInfo, group: str, name: str, recheck: float) -> StepResult:
    if not cluster.oidc_issuer_enabled or not cluster.issuer_url:
        return blocked(
            CLUSTER_READY,
            "OIDCIssuerDisabled",
            f"AKS cluster {name} has no OIDC issuer, so Entra cannot trust its service-account tokens; "
            f"enable it: az aks update -g {group} -n {name} --enable-oidc-issuer",
            recheck,
        )
    if not cluster.workload_identity_enabled:
        return blocked(
            CLUSTER_READY,
            "WorkloadIdentityDisabled",
            f"AKS cluster {name} does not run the workload identity webhook, so pods get no federated "
            f"token; enable it: az aks update -g {group} -n {name} --enable-workload-identity",
            recheck,
        )
    note = (
        " Local accounts are disabled, which the AzureML extension does not support (see amlwire doctor)."
        if cluster.local_accounts_disabled
        else ""
    )
    return done(
        CLUSTER_READY,
        "WorkloadIdentityEnabled",
        f"OIDC issuer {cluster.issuer_url} and workload identity are enabled.{note}",
    )
