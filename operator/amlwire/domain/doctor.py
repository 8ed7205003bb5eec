"""amlwire doctor, the pure part: facts read from Azure and Kubernetes in, one result per field failure out.

The checks reuse the operator's own planners (federation, extension, compute, access), so the doctor and
the operator never disagree about what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from amlwire.api.attachedcompute import AttachedComputeSpec
from amlwire.domain.access import STORAGE_DATA_ROLES, role_guid, scope_covers
from amlwire.domain.azure import (
    ClusterInfo,
    ComputeInfo,
    ExtensionInfo,
    FederatedCredential,
    IdentityInfo,
    ResourceId,
    RoleAssignment,
    StorageInfo,
    WorkspaceInfo,
)
from amlwire.domain.compute import ComputeAction, decide_compute
from amlwire.domain.conditions import rfc3339
from amlwire.domain.extension import (
    IDENTITY_ID,
    IDENTITY_TYPE,
    Action,
    ExtensionDecision,
    decide_extension,
    desired_settings,
)
from amlwire.domain.failures import BY_ID
from amlwire.domain.federation import FederationPlan, plan_federation, subject_of

Status = Literal["pass", "fail", "warn", "skip"]
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"
TOKEN_VOLUME = "azure-identity-token"  # noqa: S105 - the name of the projected token volume
SIDECAR_CERTIFICATE_ERROR = "failed to load certificate"
CLUSTER_ROLES = {
    "acdd72a7-3385-48ef-bd42-f606fba81ae7",  # Reader
    "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
    "85cb6faf-e071-4c9b-8136-154b5a04f717",  # Kubernetes Extension Contributor
    "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8",  # Azure Kubernetes Service Cluster Admin Role
    "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",  # Azure Kubernetes Service RBAC Cluster Admin
}


@dataclass(frozen=True)
class Pod:
    name: str
    labels: dict[str, str]
    env: tuple[str, ...]  # names of environment variables over all containers
    volumes: tuple[str, ...]
    containers: tuple[str, ...] = ()


@dataclass
class Facts:
    """What `gather` read. None means "does not exist"; a key in `unreadable` means "could not be read"."""

    spec: AttachedComputeSpec
    now: datetime
    role_propagation: timedelta
    cluster: ClusterInfo | None = None
    identity: IdentityInfo | None = None
    credentials: list[FederatedCredential] = field(default_factory=list)
    service_accounts: dict[tuple[str, str], Mapping[str, str] | None] = field(default_factory=dict)
    pods: list[Pod] | None = None
    extension: ExtensionInfo | None = None
    compute: ComputeInfo | None = None
    workspace: WorkspaceInfo | None = None
    storage: StorageInfo | None = None
    identity_roles: dict[str, list[RoleAssignment]] = field(default_factory=dict)  # scope -> assignments
    workspace_roles: list[RoleAssignment] = field(default_factory=list)
    write_conflicts: list[str] | None = None  # from the AttachedCompute's events; None: none to read
    sidecar_evidence: list[str] = field(default_factory=list)
    sidecar_sources: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # area -> why


@dataclass(frozen=True)
class Result:
    id: str
    title: str
    status: Status
    evidence: dict[str, str]
    fix: str = ""
    why: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "evidence": self.evidence,
            "fix": self.fix,
            "why": self.why,
        }


def _result(id_: str, status: Status, evidence: Mapping[str, object], fix: str = "", why: str = "") -> Result:
    return Result(
        id_, BY_ID[id_].title, status, {k: str(v) for k, v in evidence.items()}, fix if status != "pass" else "", why
    )


def _skip(id_: str, why: str) -> Result:
    return _result(id_, "skip", {}, why=why)


def _needs(facts: Facts, *areas: str) -> str | None:
    for area in areas:
        if area in facts.unreadable:
            return f"could not read {area}: {facts.unreadable[area]}"
    return None


# -- the cluster ------------------------------------------------------------------------------------
def check_f01(facts: Facts) -> Result:
    c, spec = facts.cluster, facts.spec.cluster
    if (why := _needs(facts, "cluster")) or c is None:
        return _skip("F01", why or "cluster not read")
    evidence = {"oidcIssuerProfile.enabled": c.oidc_issuer_enabled, "issuerURL": c.issuer_url}
    ok = c.oidc_issuer_enabled and bool(c.issuer_url)
    return _result(
        "F01",
        "pass" if ok else "fail",
        evidence,
        f"az aks update -g {spec.resource_group} -n {spec.name} --enable-oidc-issuer",
    )


def check_f02(facts: Facts) -> Result:
    c, spec = facts.cluster, facts.spec.cluster
    if (why := _needs(facts, "cluster")) or c is None:
        return _skip("F02", why or "cluster not read")
    return _result(
        "F02",
        "pass" if c.workload_identity_enabled else "fail",
        {"securityProfile.workloadIdentity.enabled": c.workload_identity_enabled},
        f"az aks update -g {spec.resource_group} -n {spec.name} --enable-workload-identity",
    )


def check_f19(facts: Facts) -> Result:
    c, spec = facts.cluster, facts.spec.cluster
    if (why := _needs(facts, "cluster")) or c is None:
        return _skip("F19", why or "cluster not read")
    return _result(
        "F19",
        "fail" if c.local_accounts_disabled else "pass",
        {"disableLocalAccounts": c.local_accounts_disabled},
        f"the AzureML extension does not support clusters without local accounts: "
        f"az aks update -g {spec.resource_group} -n {spec.name} --enable-local-accounts, or another cluster",
    )


# -- identity and federation ----------------------------------------------------------------------
def check_f03(facts: Facts) -> Result:
    if why := _needs(facts, "identity"):
        return _skip("F03", why)
    rid = ResourceId.parse(facts.spec.identity.resource_id)
    if facts.identity is None:
        return _result(
            "F03",
            "fail",
            {"resourceId": facts.spec.identity.resource_id, "GET": "404"},
            f"az identity create -g {rid.group} -n {rid.name}, or fix spec.identity.resourceId",
        )
    return _result("F03", "pass", {"clientId": facts.identity.client_id, "principalId": facts.identity.principal_id})


def _federation(facts: Facts) -> tuple[FederationPlan | None, str | None]:
    why = _needs(facts, "cluster", "identity", "federated credentials")
    if why:
        return None, why
    if facts.identity is None:
        return None, "the identity does not exist (F03)"
    if facts.cluster is None or not facts.cluster.issuer_url:
        return None, "the cluster has no OIDC issuer (F01)"
    accounts = [(a.namespace, a.name) for a in facts.spec.service_accounts]
    plan = plan_federation(
        accounts,
        facts.cluster.issuer_url,
        facts.credentials,
        identity_name=ResourceId.parse(facts.spec.identity.resource_id).name,
    )
    return plan, None


def _identity_cli(facts: Facts) -> str:
    rid = ResourceId.parse(facts.spec.identity.resource_id)
    return f"--identity-name {rid.name} -g {rid.group}"


def check_f04(facts: Facts) -> Result:
    plan, why = _federation(facts)
    if plan is None:
        return _skip("F04", why or "")
    missing = [w.credential for w in plan.writes if w.reason == "FederatedCredentialMissing"]
    evidence = {
        "issuer": plan.issuer,
        "federated": ", ".join(sorted(plan.satisfied)) or "none",
        "missing": ", ".join(c.subject for c in missing) or "none",
    }
    fixes = "; ".join(
        f"az identity federated-credential create {_identity_cli(facts)} -n {c.name} --issuer {c.issuer} "
        f"--subject {c.subject} --audiences api://AzureADTokenExchange"
        for c in missing
    )
    return _result("F04", "fail" if missing else "pass", evidence, fixes)


def check_f05(facts: Facts) -> Result:
    plan, why = _federation(facts)
    if plan is None:
        return _skip("F05", why or "")
    issuer = plan.issuer
    wrong = [
        c
        for c in facts.credentials
        if c.subject in {subject_of(a.namespace, a.name) for a in facts.spec.service_accounts}
        and c.issuer != issuer
        and c.issuer.rstrip("/").lower() == issuer.rstrip("/").lower()
    ]
    wrong += [
        c
        for c in facts.credentials
        if any(w.credential.name == c.name and w.reason == "FederatedCredentialIssuerMismatch" for w in plan.writes)
        and c not in wrong
    ]
    evidence = {
        "cluster issuer": issuer,
        **{f"credential {c.name}": f"issuer {c.issuer}, subject {c.subject}" for c in wrong},
    }
    fixes = "; ".join(
        f"az identity federated-credential update {_identity_cli(facts)} -n {c.name} --issuer {issuer}" for c in wrong
    )
    return _result("F05", "fail" if wrong else "pass", evidence, fixes)


def check_f06(facts: Facts) -> Result:
    plan, why = _federation(facts)
    if plan is None:
        return _skip("F06", why or "")
    subjects = {subject_of(a.namespace, a.name) for a in facts.spec.service_accounts}
    wrong = [
        c
        for c in facts.credentials
        if c.issuer == plan.issuer and c.subject in subjects and c.audiences != ("api://AzureADTokenExchange",)
    ]
    evidence = {f"credential {c.name}": f"audiences {list(c.audiences)}" for c in wrong} or {"audiences": "ok"}
    fixes = "; ".join(
        f"az identity federated-credential update {_identity_cli(facts)} -n {c.name} "
        f"--audiences api://AzureADTokenExchange"
        for c in wrong
    )
    return _result("F06", "fail" if wrong else "pass", evidence, fixes)


def check_f07(facts: Facts) -> Result:
    plan, why = _federation(facts)
    if plan is None:
        return _skip("F07", why or "")
    blocked = any(p.reason == "FederatedCredentialLimit" for p in plan.problems)
    count = len(facts.credentials)
    status: Status = "fail" if blocked else ("warn" if count >= 18 else "pass")
    return _result(
        "F07",
        status,
        {"federated credentials": f"{count} of 20"},
        f"az identity federated-credential list {_identity_cli(facts)}; delete the unused ones, or use "
        f"another identity",
    )


def check_f08(facts: Facts) -> Result:
    if facts.write_conflicts is None:
        return _skip("F08", "only visible in a live AttachedCompute's events (run: amlwire doctor NAME)")
    return _result(
        "F08",
        "fail" if facts.write_conflicts else "pass",
        {
            "409 conflicts seen": len(facts.write_conflicts),
            **({"last": facts.write_conflicts[-1]} if facts.write_conflicts else {}),
        },
        "find the other tool writing federated credentials of this identity at the same time "
        "(Terraform, Bicep, another amlwire) and serialize it",
    )


# -- Kubernetes -------------------------------------------------------------------------------------
def check_f09(facts: Facts) -> Result:
    if why := _needs(facts, "service accounts"):
        return _skip("F09", why)
    missing = [f"{ns}/{name}" for (ns, name), sa in facts.service_accounts.items() if sa is None]
    return _result(
        "F09",
        "fail" if missing else "pass",
        {"missing": ", ".join(missing) or "none"},
        "; ".join(f"kubectl create serviceaccount -n {m.split('/')[0]} {m.split('/')[1]}" for m in missing),
    )


def check_f10(facts: Facts) -> Result:
    if why := _needs(facts, "service accounts", "identity"):
        return _skip("F10", why)
    if facts.identity is None:
        return _skip("F10", "the identity does not exist (F03)")
    client_id = facts.identity.client_id
    wrong = {
        f"{ns}/{name}": sa.get(CLIENT_ID_ANNOTATION, "absent")
        for (ns, name), sa in facts.service_accounts.items()
        if sa is not None and sa.get(CLIENT_ID_ANNOTATION) != client_id
    }
    evidence = {"identity clientId": client_id, **{f"{k} client-id": v for k, v in wrong.items()}}
    fixes = "; ".join(
        f"kubectl annotate serviceaccount -n {k.split('/')[0]} {k.split('/')[1]} "
        f"{CLIENT_ID_ANNOTATION}={client_id} --overwrite"
        for k in wrong
    )
    return _result("F10", "fail" if wrong else "pass", evidence, fixes)


def check_f11(facts: Facts) -> Result:
    namespace = facts.spec.compute.namespace
    if why := _needs(facts, "pods"):
        return _skip("F11", why)
    if not facts.pods:
        return _skip("F11", f"no pods in namespace {namespace}: no job is running to inspect")
    bad = {}
    for pod in facts.pods:
        lacks = [
            what
            for what, ok in (
                (f"label {WORKLOAD_IDENTITY_LABEL}=true", pod.labels.get(WORKLOAD_IDENTITY_LABEL) == "true"),
                ("AZURE_FEDERATED_TOKEN_FILE", "AZURE_FEDERATED_TOKEN_FILE" in pod.env),
                (f"volume {TOKEN_VOLUME}", TOKEN_VOLUME in pod.volumes),
            )
            if not ok
        ]
        if lacks:
            bad[pod.name] = ", ".join(lacks)
    evidence = {"pods inspected": len(facts.pods), **{f"pod {k} lacks": v for k, v in bad.items()}}
    return _result(
        "F11",
        "fail" if bad else "pass",
        evidence,
        f'make job pods in namespace {namespace} carry the label {WORKLOAD_IDENTITY_LABEL}: "true" (the '
        f"workload identity webhook mutates only labelled pods)",
    )


# -- the extension, the compute ---------------------------------------------------------------------
def _extension_decision(facts: Facts) -> ExtensionDecision:
    cluster = facts.spec.cluster
    desired = desired_settings(facts.spec.extension.settings, facts.spec.identity.resource_id)
    return decide_extension(
        facts.extension, desired, False, cluster.resource_group, cluster.name, facts.spec.extension.name
    )


def check_f12(facts: Facts) -> Result:
    if why := _needs(facts, "extension"):
        return _skip("F12", why)
    decision = _extension_decision(facts)
    ext = facts.extension
    evidence = {
        "extension": facts.spec.extension.name,
        "provisioningState": ext.provisioning_state if ext else "404 (not installed)",
    }
    failed = decision.reason in ("ExtensionMissing", "ExtensionFailed", "ExtensionTypeMismatch")
    return _result("F12", "fail" if failed else "pass", evidence, decision.message)


def check_f13(facts: Facts) -> Result:
    if why := _needs(facts, "extension"):
        return _skip("F13", why)
    if facts.extension is None:
        return _skip("F13", "the extension is not installed (F12)")
    decision = _extension_decision(facts)
    settings = facts.extension.settings
    evidence = {IDENTITY_TYPE: settings.get(IDENTITY_TYPE, "absent"), IDENTITY_ID: settings.get(IDENTITY_ID, "absent")}
    wrong = decision.action is Action.REPORT and decision.reason == "ExtensionIdentityMismatch"
    return _result("F13", "fail" if wrong else "pass", evidence, decision.message)


def check_f14(facts: Facts) -> Result:
    if why := _needs(facts, "compute"):
        return _skip("F14", why)
    spec, ws = facts.spec, facts.spec.workspace
    cluster_id = str(
        ResourceId(
            spec.cluster_subscription_id,
            spec.cluster.resource_group,
            "Microsoft.ContainerService",
            "managedClusters",
            spec.cluster.name,
        )
    )
    detach = f"az ml compute detach --name {spec.compute.name} -g {ws.resource_group} -w {ws.name}"
    decision = decide_compute(
        facts.compute,
        spec.compute.name,
        cluster_id,
        spec.identity.resource_id,
        spec.compute.namespace,
        owner="",
        attempts=0,
        detach_command=detach,
    )
    c = facts.compute
    evidence = {
        "compute": spec.compute.name,
        "provisioningState": c.provisioning_state if c else "404 (not attached)",
        "identity": f"{c.identity_type} {', '.join(c.identity_ids)}".strip() if c else "-",
    }
    if decision.action is ComputeAction.NONE:
        return _result("F14", "pass", evidence)
    if decision.action is ComputeAction.WAIT:
        return _result("F14", "warn", evidence, decision.message)
    fix = (
        f"az ml compute attach --type Kubernetes --name {spec.compute.name} --resource-id {cluster_id} "
        f"--identity-type UserAssigned --user-assigned-identities {spec.identity.resource_id} "
        f"--namespace {spec.compute.namespace} -g {ws.resource_group} -w {ws.name}"
    )
    if c is not None:
        fix = f"{detach}; then {fix}"
    return _result("F14", "fail", evidence, fix)


# -- access -----------------------------------------------------------------------------------------
def _holds(assignments: list[RoleAssignment], principal: str, roles: set[str], scope: str) -> list[RoleAssignment]:
    return [
        a for a in assignments if a.principal_id == principal and a.role_guid in roles and scope_covers(a.scope, scope)
    ]


def _wanted_roles(facts: Facts) -> list[tuple[str, set[str], str]]:
    """(scope, acceptable role GUIDs, role named in the fix) the identity needs."""
    wanted = []
    if facts.workspace is not None and facts.workspace.storage_account_id:
        wanted.append((facts.workspace.storage_account_id, set(STORAGE_DATA_ROLES), "Storage Blob Data Contributor"))
    for grant in facts.spec.access.grants:
        if (
            not any(scope_covers(s, grant.scope) and scope_covers(grant.scope, s) for s, _, _ in wanted)
            or role_guid(grant.role) not in STORAGE_DATA_ROLES
        ):
            wanted.append((grant.scope, {role_guid(grant.role)}, grant.role))
    return wanted


def check_f15(facts: Facts) -> Result:
    if why := _needs(facts, "role assignments", "workspace", "identity"):
        return _skip("F15", why)
    if facts.identity is None:
        return _skip("F15", "the identity does not exist (F03)")
    principal = facts.identity.principal_id
    missing = [
        (scope, role)
        for scope, roles, role in _wanted_roles(facts)
        if not _holds(facts.identity_roles.get(scope, []), principal, roles, scope)
    ]
    evidence = {"principalId": principal, **{f"missing on {s.rsplit('/', 1)[-1]}": r for s, r in missing}}
    fixes = "; ".join(
        f"az role assignment create --assignee-object-id {principal} --assignee-principal-type "
        f'ServicePrincipal --role "{r}" --scope {s}'
        for s, r in missing
    )
    return _result("F15", "fail" if missing else "pass", evidence, fixes)


def check_f16(facts: Facts) -> Result:
    if why := _needs(facts, "role assignments", "workspace", "identity"):
        return _skip("F16", why)
    if facts.identity is None:
        return _skip("F16", "the identity does not exist (F03)")
    young: list[tuple[RoleAssignment, str, str]] = []
    for scope, roles, _ in _wanted_roles(facts):
        for assignment in _holds(facts.identity_roles.get(scope, []), facts.identity.principal_id, roles, scope):
            if assignment.created_on and assignment.created_on + facts.role_propagation > facts.now:
                young.append(
                    (
                        assignment,
                        rfc3339(assignment.created_on),
                        rfc3339(assignment.created_on + facts.role_propagation),
                    )
                )
    evidence = {
        f"{a.scope.rsplit('/', 1)[-1]} assigned": f"{created}, effective by {until}" for a, created, until in young
    }
    return _result(
        "F16",
        "fail" if young else "pass",
        evidence or {"assignments": "older than the window"},
        "wait: Azure RBAC applies new assignments within minutes, sometimes longer; retry after "
        + (max(until for _, _, until in young) if young else ""),
    )


def check_f17(facts: Facts) -> Result:
    if why := _needs(facts, "workspace", "storage"):
        return _skip("F17", why)
    if facts.workspace is None or facts.storage is None:
        return _skip("F17", "the workspace's storage account was not found")
    shared = facts.storage.allow_shared_key_access
    mode = (facts.workspace.system_datastores_auth_mode or "accesskey").lower()
    evidence = {"allowSharedKeyAccess": "null (true)" if shared is None else shared, "systemDatastoresAuthMode": mode}
    bad = shared is False and mode == "accesskey"
    return _result(
        "F17",
        "fail" if bad else "pass",
        evidence,
        "switch the workspace's datastores to identity-based access (az ml datastore update ... "
        "--identity) or, if the default datastore cannot change, create a new workspace with "
        "system_datastores_auth_mode=identity",
    )


def check_f18(facts: Facts) -> Result:
    if why := _needs(facts, "workspace", "workspace role assignments"):
        return _skip("F18", why)
    spec = facts.spec
    cluster_id = str(
        ResourceId(
            spec.cluster_subscription_id,
            spec.cluster.resource_group,
            "Microsoft.ContainerService",
            "managedClusters",
            spec.cluster.name,
        )
    )
    principal = facts.workspace.identity_principal_id if facts.workspace else None
    if not principal:
        return _skip("F18", "the workspace has no managed identity to check")
    held = _holds(facts.workspace_roles, principal, CLUSTER_ROLES, cluster_id)
    return _result(
        "F18",
        "pass" if held else "fail",
        {"workspace principal": principal, "roles on the cluster": len(held)},
        f"az role assignment create --assignee-object-id {principal} --assignee-principal-type "
        f"ServicePrincipal --role Reader --scope {cluster_id}",
    )


def check_f23(facts: Facts) -> Result:
    if facts.sidecar_evidence:
        return _result(
            "F23",
            "fail",
            {"evidence": facts.sidecar_evidence[0], "sources": ", ".join(facts.sidecar_sources)},
            "set spec.model.delivery: InContainer on AmlJobs (the job downloads the model with its own "
            "workload identity), and repair the AzureML extension's data-capability identity",
        )
    if not facts.sidecar_sources:
        return _skip("F23", "no data-capability logs were readable and no AmlJob failed on this compute")
    return _result("F23", "pass", {"sources": ", ".join(facts.sidecar_sources)})


CHECKS: tuple[Callable[[Facts], Result], ...] = (
    check_f01,
    check_f02,
    check_f03,
    check_f04,
    check_f05,
    check_f06,
    check_f07,
    check_f08,
    check_f09,
    check_f10,
    check_f11,
    check_f12,
    check_f13,
    check_f14,
    check_f15,
    check_f16,
    check_f17,
    check_f18,
    check_f19,
    check_f23,
)


def diagnose(facts: Facts) -> list[Result]:
    return [check(facts) for check in CHECKS]


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == "fail" for r in results) else 0
