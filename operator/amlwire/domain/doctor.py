"""amlwire doctor, the pure part: facts read from Azure and Kubernetes in, one result per field failure out.

Each check is a small function named for what it detects, registered with the failure it reports
(`@check("F04") def federated_credential_missing(facts)`). The checks reuse the operator's own planners
(federation, extension, compute, access) and the failure table's fixes, so the doctor and the operator never
disagree about what is wrong or how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import AttachedComputeSpec
from amlwire.api.roles import guids
from amlwire.domain.access import (
    STORAGE_DATA_ROLES,
    WORKSPACE_MODEL_READERS,
    role_guid,
    scope_covers,
    shared_key_problem,
    still_propagating,
)
from amlwire.domain.azure import (
    ClusterInfo,
    ComputeInfo,
    ExtensionInfo,
    FederatedCredential,
    IdentityInfo,
    RoleAssignment,
    StorageInfo,
    WorkspaceInfo,
    name_of,
)
from amlwire.domain.compute import ComputeAction, cluster_role_command, decide_compute, missing_uami_cluster_roles
from amlwire.domain.conditions import rfc3339
from amlwire.domain.extension import (
    ENABLE_TRAINING,
    IDENTITY_ID,
    IDENTITY_TYPE,
    Action,
    ExtensionDecision,
    cli_settings,
    decide_extension,
)
from amlwire.domain.extension import desired_settings as extension_settings
from amlwire.domain.failures import AUDIENCE, BY_ID
from amlwire.domain.federation import EXTENSION_SERVICE_ACCOUNTS, FederationPlan, plan_federation, subject_of
from amlwire.domain.jobs import sidecar_credential
from amlwire.domain.view import Target, target_of

Status = Literal["pass", "fail", "warn", "skip"]
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"
TOKEN_VOLUME = "azure-identity-token"  # noqa: S105 - the name of the projected token volume
SIDECAR_CERTIFICATE_ERROR = "failed to load certificate"
CLUSTER_ROLES = guids(
    "Reader",
    "Contributor",
    "Owner",
    "Kubernetes Extension Contributor",
    "Azure Kubernetes Service Cluster Admin Role",
    "Azure Kubernetes Service RBAC Cluster Admin",
)


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
    storage_failures: list[str] = field(default_factory=list)  # AmlJob failures on the compute that hit storage
    in_container_jobs: int = 0  # AmlJobs on the compute that download their model themselves
    jobs_completed: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # area -> why

    @property
    def target(self) -> Target:
        return target_of(self.spec)


@dataclass(frozen=True)
class Result:
    id: str
    title: str
    status: Status
    evidence: dict[str, str]
    fix: str = ""
    why: str = ""
    check: str = ""  # the name of the check: what it verified
    headline: str = ""  # one line naming who needs what, where a failure has one

    def as_dict(self) -> dict[str, object]:
        shown: dict[str, object] = {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "evidence": self.evidence,
            "fix": self.fix,
            "why": self.why,
        }
        return shown | ({"headline": self.headline} if self.headline else {})


CheckFn = Callable[[Facts], Result]


@dataclass(frozen=True)
class Check:
    """One named check: what it detects (its function's name) and the field failure it reports."""

    failure: str
    run: CheckFn

    @property
    def name(self) -> str:
        return self.run.__name__


CHECKS: list[Check] = []


def check(failure: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check of one field failure: `@check("F04") def federated_credential_missing(facts)`."""

    def register(run: CheckFn) -> CheckFn:
        if failure not in BY_ID or BY_ID[failure].wiring is None or any(c.failure == failure for c in CHECKS):
            raise ValueError(
                f"{failure}: not in the failure table with a place in the wiring's chain, or checked twice"
            )
        CHECKS.append(Check(failure, run))
        return run

    return register


def result(id_: str, status: Status, evidence: Mapping[str, object], fix: str = "", why: str = "") -> Result:
    shown = {k: str(v) for k, v in evidence.items()}
    return Result(id_, BY_ID[id_].title, status, shown, fix if status != "pass" else "", why)


def skip(id_: str, why: str) -> Result:
    return result(id_, "skip", {}, why=why)


def unreadable(facts: Facts, *areas: str) -> str | None:
    for area in areas:
        if area in facts.unreadable:
            return f"could not read {area}: {facts.unreadable[area]}"
    return None


# -- the cluster ------------------------------------------------------------------------------------
def _cluster_check(facts: Facts, id_: str, healthy: Callable[[ClusterInfo], bool], evidence: dict[str, str]) -> Result:
    """A check of one property of the cluster: `evidence` names the fields it read (attribute -> shown as)."""
    c = facts.cluster
    if (why := unreadable(facts, "cluster")) or c is None:
        return skip(id_, why or "cluster not read")
    shown = {label: getattr(c, attribute) for attribute, label in evidence.items()}
    fix = BY_ID[id_].fix(group=facts.spec.cluster.resource_group, cluster=facts.spec.cluster.name)
    return result(id_, "pass" if healthy(c) else "fail", shown, fix)


@check("F01")
def oidc_issuer_disabled(facts: Facts) -> Result:
    return _cluster_check(
        facts,
        "F01",
        lambda c: c.oidc_issuer_enabled and bool(c.issuer_url),
        {"oidc_issuer_enabled": "oidcIssuerProfile.enabled", "issuer_url": "issuerURL"},
    )


@check("F02")
def workload_identity_disabled(facts: Facts) -> Result:
    return _cluster_check(
        facts,
        "F02",
        lambda c: c.workload_identity_enabled,
        {"workload_identity_enabled": "securityProfile.workloadIdentity.enabled"},
    )


@check("F19")
def local_accounts_disabled(facts: Facts) -> Result:
    return _cluster_check(
        facts, "F19", lambda c: not c.local_accounts_disabled, {"local_accounts_disabled": "disableLocalAccounts"}
    )


# -- identity and federation ----------------------------------------------------------------------
def _identity_values(facts: Facts) -> dict[str, str]:
    rid = facts.target.identity
    return {"identity": rid.name, "group": rid.group}


@check("F03")
def identity_missing(facts: Facts) -> Result:
    if why := unreadable(facts, "identity"):
        return skip("F03", why)
    rid = facts.target.identity
    if facts.identity is None:
        return result(
            "F03",
            "fail",
            {"resourceId": facts.spec.identity.resource_id, "GET": "404"},
            BY_ID["F03"].fix(group=rid.group, name=rid.name),
        )
    return result("F03", "pass", {"clientId": facts.identity.client_id, "principalId": facts.identity.principal_id})


def _federation(facts: Facts) -> tuple[FederationPlan | None, str | None]:
    why = unreadable(facts, "cluster", "identity", "federated credentials")
    if why:
        return None, why
    if facts.identity is None:
        return None, "the identity does not exist (F03)"
    if facts.cluster is None or not facts.cluster.issuer_url:
        return None, "the cluster has no OIDC issuer (F01)"
    accounts = [(a.namespace, a.name) for a in facts.spec.service_accounts]
    accounts += [a for a in EXTENSION_SERVICE_ACCOUNTS if a not in accounts]  # the extension needs them anyway
    plan = plan_federation(
        accounts,
        facts.cluster.issuer_url,
        facts.credentials,
        identity_name=facts.target.identity.name,
        identity_group=facts.target.identity.group,
        cluster=facts.spec.cluster.name,
    )
    return plan, None


def federation_check(failure: str) -> Callable[[Callable[[Facts, FederationPlan], Result]], CheckFn]:
    """A check of the identity's federated credentials: it runs on the operator's own federation plan, and is
    skipped (saying why) when there is no plan to make (no identity, no issuer, nothing readable)."""

    def register(run: Callable[[Facts, FederationPlan], Result]) -> CheckFn:
        def checked(facts: Facts) -> Result:
            plan, why = _federation(facts)
            return skip(failure, why or "") if plan is None else run(facts, plan)

        checked.__name__ = run.__name__
        return check(failure)(checked)

    return register


def _subjects(facts: Facts) -> set[str]:
    return {subject_of(a.namespace, a.name) for a in facts.spec.service_accounts} | {
        subject_of(ns, name) for ns, name in EXTENSION_SERVICE_ACCOUNTS
    }


@federation_check("F04")
def federated_credential_missing(facts: Facts, plan: FederationPlan) -> Result:
    missing = [w.credential for w in plan.writes if w.reason == r.FEDERATED_CREDENTIAL_MISSING]
    evidence = {
        "issuer": plan.issuer,
        "federated": ", ".join(sorted(plan.satisfied)) or "none",
        "missing": ", ".join(c.subject for c in missing) or "none",
    }
    fixes = "; ".join(
        BY_ID["F04"].fix(**_identity_values(facts), name=c.name, issuer=c.issuer, subject=c.subject) for c in missing
    )
    return result("F04", "fail" if missing else "pass", evidence, fixes)


@federation_check("F05")
def federated_credential_issuer_mismatch(facts: Facts, plan: FederationPlan) -> Result:
    issuer, subjects = plan.issuer, _subjects(facts)
    rewritten = {w.credential.name for w in plan.writes if w.reason == r.FEDERATED_CREDENTIAL_ISSUER_MISMATCH}
    wrong = [
        c
        for c in facts.credentials
        if (c.subject in subjects and c.issuer != issuer and c.issuer.rstrip("/").lower() == issuer.rstrip("/").lower())
        or c.name in rewritten
    ]
    evidence = {
        "cluster issuer": issuer,
        **{f"credential {c.name}": f"issuer {c.issuer}, subject {c.subject}" for c in wrong},
    }
    fixes = "; ".join(BY_ID["F05"].fix(**_identity_values(facts), name=c.name, issuer=issuer) for c in wrong)
    return result("F05", "fail" if wrong else "pass", evidence, fixes)


@federation_check("F06")
def federated_credential_audience_wrong(facts: Facts, plan: FederationPlan) -> Result:
    subjects = _subjects(facts)
    wrong = [
        c for c in facts.credentials if c.issuer == plan.issuer and c.subject in subjects and c.audiences != (AUDIENCE,)
    ]
    evidence = {f"credential {c.name}": f"audiences {list(c.audiences)}" for c in wrong} or {"audiences": "ok"}
    fixes = "; ".join(BY_ID["F06"].fix(**_identity_values(facts), name=c.name) for c in wrong)
    return result("F06", "fail" if wrong else "pass", evidence, fixes)


@federation_check("F07")
def federated_credential_cap_reached(facts: Facts, plan: FederationPlan) -> Result:
    blocked = any(p.reason == r.FEDERATED_CREDENTIAL_LIMIT for p in plan.problems)
    budget = plan.budget
    status: Status = "fail" if blocked else ("warn" if budget.clusters_remaining == 0 else "pass")
    evidence = {
        "federated credentials": f"{len(facts.credentials)} of {budget.limit}",
        "after amlwire's writes": budget.summary(),
    }
    return result("F07", status, evidence, BY_ID["F07"].fix(**_identity_values(facts)))


@check("F08")
def concurrent_credential_writes(facts: Facts) -> Result:
    if facts.write_conflicts is None:
        return skip("F08", "only visible in a live AttachedCompute's events (run: amlwire doctor NAME)")
    return result(
        "F08",
        "fail" if facts.write_conflicts else "pass",
        {
            "409 conflicts seen": len(facts.write_conflicts),
            **({"last": facts.write_conflicts[-1]} if facts.write_conflicts else {}),
        },
        BY_ID["F08"].fix(),
    )


# -- Kubernetes -------------------------------------------------------------------------------------
@check("F09")
def service_account_missing(facts: Facts) -> Result:
    if why := unreadable(facts, "service accounts"):
        return skip("F09", why)
    creates = {(a.namespace, a.name): a.create for a in facts.spec.service_accounts}
    missing = [key for key, sa in facts.service_accounts.items() if sa is None]
    fixes = "; ".join(
        f"amlwire creates {ns}/{name} (spec.serviceAccounts[].create is true): check that the operator runs"
        if creates.get((ns, name), True)
        else BY_ID["F09"].fix(namespace=ns, name=name)
        for ns, name in missing
    )
    evidence = {"missing": ", ".join(f"{ns}/{name}" for ns, name in missing) or "none"}
    return result("F09", "fail" if missing else "pass", evidence, fixes)


@check("F10")
def client_id_annotation_wrong(facts: Facts) -> Result:
    if why := unreadable(facts, "service accounts", "identity"):
        return skip("F10", why)
    if facts.identity is None:
        return skip("F10", "the identity does not exist (F03)")
    client_id = facts.identity.client_id
    wrong = {
        (ns, name): sa.get(CLIENT_ID_ANNOTATION, "absent")
        for (ns, name), sa in facts.service_accounts.items()
        if sa is not None and sa.get(CLIENT_ID_ANNOTATION) != client_id
    }
    evidence = {"identity clientId": client_id, **{f"{ns}/{name} client-id": v for (ns, name), v in wrong.items()}}
    fixes = "; ".join(BY_ID["F10"].fix(namespace=ns, name=name, client_id=client_id) for ns, name in wrong)
    return result("F10", "fail" if wrong else "pass", evidence, fixes)


@check("F11")
def job_pods_not_labelled(facts: Facts) -> Result:
    namespace = facts.spec.compute.namespace
    if why := unreadable(facts, "pods"):
        return skip("F11", why)
    if not facts.pods:
        return skip("F11", f"no pods in namespace {namespace}: no job is running to inspect")
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
    return result("F11", "fail" if bad else "pass", evidence, BY_ID["F11"].fix(namespace=namespace))


# -- the extension, the compute ---------------------------------------------------------------------
def _extension_decision(facts: Facts) -> ExtensionDecision:
    cluster = facts.spec.cluster
    extension = facts.spec.extension
    desired = extension_settings(extension.settings, facts.spec.identity.resource_id, extension.set_identity_settings)
    found = facts.cluster
    defaults = cli_settings(found.id, cluster.name, found.location, found.node_count) if found else None
    return decide_extension(
        facts.extension, desired, False, cluster.resource_group, cluster.name, facts.spec.extension.name, defaults
    )


def _without_configure_advice(message: str, facts: Facts) -> str:
    """The fix, without advising `mode: Configure` to a spec that is already in it."""
    if facts.spec.extension.mode == "Configure":
        return message.replace(", or set spec.extension.mode: Configure", "")
    return message


@check("F12")
def extension_missing_or_failed(facts: Facts) -> Result:
    if why := unreadable(facts, "extension"):
        return skip("F12", why)
    decision = _extension_decision(facts)
    ext = facts.extension
    evidence = {
        "extension": facts.spec.extension.name,
        "provisioningState": ext.provisioning_state if ext else "404 (not installed)",
    }
    if ext is not None:
        evidence[ENABLE_TRAINING] = ext.settings.get(ENABLE_TRAINING, "absent (AML's default: off)")
    failed = decision.reason in (r.EXTENSION_MISSING, r.EXTENSION_FAILED, r.EXTENSION_TYPE_MISMATCH)
    lacks = decision.reason == r.EXTENSION_LACKS_CLI_SETTINGS
    if ext is not None and ext.error:
        evidence["error"] = ext.error
    if lacks:
        evidence["lacks (set by az k8s-extension create)"] = ", ".join(decision.lacks)
    status: Status = "fail" if failed else "warn" if lacks else "pass"
    return result("F12", status, evidence, _without_configure_advice(decision.message, facts))


@check("F13")
def extension_identity_not_set(facts: Facts) -> Result:
    if why := unreadable(facts, "extension"):
        return skip("F13", why)
    if facts.extension is None:
        return skip("F13", "the extension is not installed (F12)")
    decision = _extension_decision(facts)
    settings = facts.extension.settings
    evidence = {IDENTITY_TYPE: settings.get(IDENTITY_TYPE, "absent"), IDENTITY_ID: settings.get(IDENTITY_ID, "absent")}
    wrong = decision.action is Action.REPORT and decision.reason == r.EXTENSION_IDENTITY_MISMATCH
    return result("F13", "fail" if wrong else "pass", evidence, _without_configure_advice(decision.message, facts))


@check("F14")
def compute_not_attached_with_the_identity(facts: Facts) -> Result:
    if why := unreadable(facts, "compute"):
        return skip("F14", why)
    spec, target = facts.spec, facts.target
    values = {
        **target.detach_command_values,
        "cluster_id": target.cluster_id,
        "identity_id": target.identity_id,
        "namespace": target.compute_namespace,
    }
    detach = BY_ID["F14"].command("detach", **values)
    decision = decide_compute(
        facts.compute,
        target.compute_name,
        target.cluster_id,
        target.identity_id,
        target.compute_namespace,
        owner="",
        detach_command=detach,
    )
    c = facts.compute
    evidence = {
        "compute": spec.compute.name,
        "provisioningState": c.provisioning_state if c else "404 (not attached)",
        "identity": f"{c.identity_type} {', '.join(c.identity_ids)}".strip() if c else "-",
    }
    if decision.action is ComputeAction.NONE:
        return result("F14", "pass", evidence)
    if decision.action is ComputeAction.WAIT:
        return result("F14", "warn", evidence, decision.message)
    fix = BY_ID["F14"].fix(**values)
    return result("F14", "fail", evidence, f"{detach}; then {fix}" if c is not None else fix)


# -- access -----------------------------------------------------------------------------------------
def _holds(
    assignments: list[RoleAssignment], principal: str, roles: AbstractSet[str], scope: str
) -> list[RoleAssignment]:
    return [a for a in assignments if a.applies_to(principal) and a.role_guid in roles and scope_covers(a.scope, scope)]


def _wanted_roles(facts: Facts) -> list[tuple[str, set[str], str]]:
    """(scope, acceptable role GUIDs, role named in the fix) the identity needs."""
    wanted = []
    if facts.workspace is not None and facts.workspace.storage_account_id:
        wanted.append((facts.workspace.storage_account_id, set(STORAGE_DATA_ROLES), "Storage Blob Data Contributor"))
    if facts.in_container_jobs and facts.workspace is not None and facts.workspace.id in facts.identity_roles:
        wanted.append((facts.workspace.id, set(WORKSPACE_MODEL_READERS), "AzureML Data Scientist"))
    for grant in facts.spec.access.grants:
        if (
            not any(scope_covers(s, grant.scope) and scope_covers(grant.scope, s) for s, _, _ in wanted)
            or role_guid(grant.role) not in STORAGE_DATA_ROLES
        ):
            wanted.append((grant.scope, {role_guid(grant.role)}, grant.role))
    return wanted


def role_check(failure: str) -> Callable[[Callable[[Facts, str], Result]], CheckFn]:
    """A check of the identity's role assignments: it runs with the identity's principal ID, and is skipped
    (saying why) when the identity or its assignments could not be read."""

    def register(run: Callable[[Facts, str], Result]) -> CheckFn:
        def checked(facts: Facts) -> Result:
            if why := unreadable(facts, "role assignments", "workspace", "identity"):
                return skip(failure, why)
            if facts.identity is None:
                return skip(failure, "the identity does not exist (F03)")
            return run(facts, facts.identity.principal_id)

        checked.__name__ = run.__name__
        return check(failure)(checked)

    return register


@role_check("F15")
def data_role_missing(facts: Facts, principal: str) -> Result:
    missing = [
        (scope, role)
        for scope, roles, role in _wanted_roles(facts)
        if not _holds(facts.identity_roles.get(scope, []), principal, roles, scope)
    ]
    evidence = {"principalId": principal, **{f"missing on {name_of(s)}": role for s, role in missing}}
    fixes = "; ".join(BY_ID["F15"].fix(principal=principal, role=role, scope=s) for s, role in missing)
    return result("F15", "fail" if missing else "pass", evidence, fixes)


@role_check("F16")
def role_still_propagating(facts: Facts, principal: str) -> Result:
    held = [
        assignment
        for scope, roles, _ in _wanted_roles(facts)
        for assignment in _holds(facts.identity_roles.get(scope, []), principal, roles, scope)
    ]
    young = still_propagating(held, facts.now, facts.role_propagation)
    evidence = {
        f"{name_of(a.scope)} assigned": f"{rfc3339(a.created_on)}, effective by {rfc3339(until)}"
        for a, until in young
        if a.created_on
    }
    return result(
        "F16",
        "fail" if young else "pass",
        evidence or {"assignments": "older than the window"},
        BY_ID["F16"].fix(until=max((rfc3339(until) for _, until in young), default="")),
    )


@check("F17")
def shared_keys_off_with_key_datastore(facts: Facts) -> Result:
    if why := unreadable(facts, "workspace", "storage"):
        return skip("F17", why)
    if facts.workspace is None or facts.storage is None:
        return skip("F17", "the workspace's storage account was not found")
    shared = facts.storage.allow_shared_key_access
    mode = (facts.workspace.system_datastores_auth_mode or "accesskey").lower()
    evidence = {"allowSharedKeyAccess": "null (true)" if shared is None else shared, "systemDatastoresAuthMode": mode}
    bad = shared_key_problem(facts.workspace, facts.storage) is not None
    return result("F17", "fail" if bad else "pass", evidence, BY_ID["F17"].fix())


@check("F18")
def workspace_identity_lacks_cluster_roles(facts: Facts) -> Result:
    if why := unreadable(facts, "workspace", "workspace role assignments"):
        return skip("F18", why)
    cluster_id = facts.target.cluster_id
    principal = facts.workspace.identity_principal_id if facts.workspace else None
    if not principal:
        return skip("F18", "the workspace has no managed identity to check")
    if facts.workspace is not None and facts.workspace.identity_user_assigned:
        missing = missing_uami_cluster_roles(facts.workspace_roles, principal, cluster_id)
        return result(
            "F18",
            "fail" if missing else "pass",
            {
                "workspace principal": f"{principal} (user-assigned: needs all three roles on the cluster)",
                "missing": ", ".join(missing) or "none",
            },
            "; ".join(cluster_role_command(principal, role, cluster_id) for role in missing),
        )
    held = _holds(facts.workspace_roles, principal, CLUSTER_ROLES, cluster_id)
    return result(
        "F18",
        "pass" if held else "fail",
        {"workspace principal": principal, "roles on the cluster": len(held)},
        BY_ID["F18"].fix(principal=principal, cluster_id=cluster_id),
    )


@check("F23")
def sidecar_certificate_auth(facts: Facts) -> Result:
    """Which way the data-capability sidecar gets its credential, as the jobs and logs show it."""
    credential = sidecar_credential(
        facts.sidecar_evidence + facts.storage_failures, facts.jobs_completed, links_broken=False
    )
    if facts.sidecar_evidence:
        return result(
            "F23",
            "fail",
            {
                "evidence": facts.sidecar_evidence[0],
                "sidecar credential": credential,
                "sources": ", ".join(facts.sidecar_sources),
            },
            BY_ID["F23"].fix(),
        )
    if not facts.sidecar_sources:
        return skip("F23", "no data-capability logs were readable and no AmlJob ran on this compute")
    return result("F23", "pass", {"sidecar credential": credential, "sources": ", ".join(facts.sidecar_sources)})


def diagnose(facts: Facts) -> list[Result]:
    """Every check, in failure-id order, each result stamped with the name of the check that made it."""
    ordered = sorted(CHECKS, key=lambda c: c.failure)
    return [named(c.run(facts), c.name) for c in ordered]


def named(found: Result, name: str) -> Result:
    return replace(found, check=name)


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == "fail" for r in results) else 0
