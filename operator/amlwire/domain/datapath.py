"""amlwire doctor on a job's data path, the pure part: which principal reads each datastore a job touches on
any compute (compute cluster, serverless, Kubernetes), and whether storage lets it.

For a job, data access never uses the workspace identity: it is the compute's managed identity (job identity
`managed`, or none: the compute identity is the fallback), the submitting user (`user_identity`), or the
credential a datastore keeps (Learn: "Data administration"; "Set up authentication between Azure ML and
other services").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from amlwire.api import roles
from amlwire.domain.access import STORAGE_DATA_ROLES, scope_covers, still_propagating
from amlwire.domain.azure import RoleAssignment, WorkspaceInfo, name_of
from amlwire.domain.conditions import rfc3339
from amlwire.domain.doctor import Result, named, result, skip
from amlwire.domain.failures import BY_ID

JobIdentity = Literal["managed", "user", "aml-token"]
JOB_IDENTITIES: tuple[JobIdentity, ...] = ("managed", "user", "aml-token")
SERVERLESS = "serverless"
SERVERLESS_MANAGED = "the workspace's user-assigned identity (serverless with identity managed, unverified)"
SYSTEM_DATASTORES = {"workspaceblobstore", "workspaceartifactstore", "workspacefilestore", "workspaceworkingdirectory"}
LIST_SECRETS = "Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action"
WRITE_ROLES = roles.BLOB_WRITERS  # Contributor and Owner
READER_ROLE, WRITER_ROLE = "Storage Blob Data Reader", "Storage Blob Data Contributor"


@dataclass(frozen=True)
class DatastoreInfo:
    name: str
    account_id: str
    container: str
    credential_type: str  # None (identity-based), AccountKey, Sas, ServicePrincipal, Certificate
    is_default: bool = False

    @property
    def identity_based(self) -> bool:
        return self.credential_type == "None"

    @property
    def container_scope(self) -> str:
        return f"{self.account_id}/blobServices/default/containers/{self.container}"

    @property
    def system(self) -> bool:
        return self.name.lower() in SYSTEM_DATASTORES


@dataclass(frozen=True)
class ComputeIdentities:
    """A compute's kind and its managed identities (serverless: kind Serverless, none of its own)."""

    name: str
    kind: str  # AmlCompute, Kubernetes, Serverless, or another AML compute type
    system_principal: str | None = None
    user_assigned: dict[str, tuple[str, str]] = field(default_factory=dict)  # resource ID -> (principal, client)
    subnet: str | None = None


@dataclass(frozen=True)
class StorageNetwork:
    id: str
    allow_shared_key_access: bool | None
    public_network_access: str = "Enabled"
    default_action: str = "Allow"
    network_rules: tuple[str, ...] = ()  # subnets admitted by service endpoint
    endpoint_subnets: tuple[str, ...] = ()  # subnets of the account's approved private endpoints

    @property
    def closed(self) -> bool:
        return self.public_network_access == "Disabled" or self.default_action == "Deny"


@dataclass(frozen=True)
class RoleDefinitionInfo:
    guid: str
    name: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()

    def allows(self, action: str) -> bool:
        return roles.matches_any(self.actions, action) and not roles.matches_any(self.not_actions, action)


@dataclass(frozen=True)
class StepIdentity:
    """A pipeline step's own identity setting, which wins over the pipeline's."""

    identity: JobIdentity
    selector: str | None = None  # the client or resource ID a managed-identity step names


@dataclass(frozen=True)
class Usage:
    datastore: DatastoreInfo
    write: bool
    step: str = ""  # the pipeline step that touches it
    own: StepIdentity | None = None  # the step's identity, when it has one


@dataclass(frozen=True)
class JobFacts:
    name: str
    job_type: str
    status: str
    error: str = ""
    submitted_by: str = ""  # systemData.createdBy: a name, not an object ID


@dataclass
class DataPathFacts:
    """What the data-path doctor read. A key in `unreadable` means "could not be read"."""

    workspace: WorkspaceInfo
    workspace_group: str
    workspace_name: str
    compute: ComputeIdentities
    job_identity: JobIdentity
    now: datetime
    role_propagation: timedelta
    identity_selector: str | None = None  # the client or resource ID a managed-identity job names
    user: str | None = None
    usages: list[Usage] = field(default_factory=list)
    secrets: dict[str, bool] = field(default_factory=dict)  # datastore -> a key or token is stored
    storage: dict[str, StorageNetwork] = field(default_factory=dict)  # account ID (lower) -> account
    roles: dict[str, list[RoleAssignment]] = field(default_factory=dict)  # principal -> assignments over accounts
    workspace_user_assigned: tuple[str, ...] = ()  # principals of the workspace's user-assigned identities
    workspace_roles: dict[str, list[RoleAssignment]] = field(default_factory=dict)  # principal -> over the workspace
    role_definitions: dict[str, RoleDefinitionInfo] = field(default_factory=dict)
    job: JobFacts | None = None
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def credential_usages(self) -> list[Usage]:
        return [u for u in self.usages if not u.datastore.identity_based]

    @property
    def identity_usages(self) -> list[Usage]:
        return [u for u in self.usages if u.datastore.identity_based]

    def storage_of(self, usage: Usage) -> StorageNetwork | None:
        return self.storage.get(usage.datastore.account_id.lower())


@dataclass(frozen=True)
class Reader:
    """The principal that reads identity-based data for the job, or why there is none."""

    principal: str | None
    principal_type: Literal["ServicePrincipal", "User"]
    described: str
    missing: str = ""  # why no principal: the compute has no identity (F27) or the user is not known


def identity_of(facts: DataPathFacts, usage: Usage | None = None) -> StepIdentity:
    """The identity setting a usage runs under: its step's own, else the job's."""
    if usage is not None and usage.own is not None:
        return usage.own
    return StepIdentity(facts.job_identity, facts.identity_selector)


def reader_of(facts: DataPathFacts, usage: Usage | None = None) -> Reader:
    """Who reads identity-based data for this job or step (rule: identity user_identity is the user; managed or
    none is the compute's managed identity; Kubernetes compute always the attached identity)."""
    compute, setting = facts.compute, identity_of(facts, usage)
    identity = setting.identity
    if compute.kind == "Kubernetes":
        aside = " (user identity is documented for compute clusters only)" if identity == "user" else ""
        return _compute_reader(facts, setting, f"the identity the Kubernetes compute was attached with{aside}")
    if identity == "user" or (compute.kind == "Serverless" and identity == "aml-token"):
        assumed = " (serverless default, unverified)" if identity == "aml-token" else ""
        if facts.user:
            return Reader(facts.user, "User", f"the submitting user{assumed}")
        who = f" (the job was submitted by {facts.job.submitted_by})" if facts.job and facts.job.submitted_by else ""
        return Reader(None, "User", f"the submitting user{assumed}", f"pass --user OBJECT_ID of the user{who}")
    if compute.kind == "Serverless":
        if facts.workspace_user_assigned:
            return Reader(facts.workspace_user_assigned[0], "ServicePrincipal", SERVERLESS_MANAGED)
        return Reader(None, "ServicePrincipal", SERVERLESS_MANAGED, "the workspace has none")
    return _compute_reader(facts, setting, f"the managed identity of compute {compute.name}")


def _compute_reader(facts: DataPathFacts, setting: StepIdentity, described: str) -> Reader:
    compute, selector = facts.compute, (setting.selector or "").lower()
    candidates = [(p, "system-assigned", {""}) for p in [compute.system_principal] if p]
    candidates += [
        (p, name_of(rid), {rid.lower(), client.lower()}) for rid, (p, client) in compute.user_assigned.items()
    ]
    if selector:
        candidates = [c for c in candidates if selector in c[2]]
    if not candidates:
        named = f" named {setting.selector}" if selector else ""
        return Reader(None, "ServicePrincipal", described, f"compute {compute.name} has no managed identity{named}")
    principal, which, _ = candidates[0]
    return Reader(principal, "ServicePrincipal", f"{described} ({which})")


# -- the checks ------------------------------------------------------------------------------------------
DataCheckFn = Callable[[DataPathFacts], Result]
DATA_CHECKS: list[tuple[str, DataCheckFn]] = []


def data_check(failure: str) -> Callable[[DataCheckFn], DataCheckFn]:
    def register(run: DataCheckFn) -> DataCheckFn:
        if failure not in BY_ID or BY_ID[failure].data_path is None or any(f == failure for f, _ in DATA_CHECKS):
            raise ValueError(
                f"{failure}: not in the failure table with a place in the data path's chain, or checked twice"
            )
        DATA_CHECKS.append((failure, run))
        return run

    return register


def _values(facts: DataPathFacts) -> dict[str, str]:
    return {
        "workspace_group": facts.workspace_group,
        "workspace": facts.workspace_name,
        "compute": facts.compute.name,
        "workspace_id": facts.workspace.id,
    }


def _unreadable(facts: DataPathFacts, *areas: str) -> str | None:
    return next((f"could not read {a}: {facts.unreadable[a]}" for a in areas if a in facts.unreadable), None)


def _held(facts: DataPathFacts, principal: str, usage: Usage) -> list[RoleAssignment]:
    roles = WRITE_ROLES if usage.write else STORAGE_DATA_ROLES
    return [
        a
        for a in facts.roles.get(principal, [])
        if a.applies_to(principal) and a.role_guid in roles and scope_covers(a.scope, usage.datastore.container_scope)
    ]


def _read_by(facts: DataPathFacts, usages: list[Usage]) -> list[tuple[Reader, Usage]]:
    """Each usage with the principal that reads it (a pipeline step with its own identity has its own)."""
    return [(reader_of(facts, u), u) for u in usages]


def _lacking(facts: DataPathFacts) -> list[tuple[Reader, Usage]]:
    return [
        (reader, u)
        for reader, u in _read_by(facts, facts.identity_usages)
        if reader.principal and not _held(facts, reader.principal, u)
    ]


def _grant(lacking: list[tuple[Reader, Usage]]) -> list[str]:
    """One `az role assignment create` per reader and account: Contributor where the job writes, else Reader."""
    commands: dict[tuple[str, str], str] = {}
    for reader, usage in lacking:
        account = usage.datastore.account_id
        key = (reader.principal or "", account)
        if key in commands:
            continue
        same = [u for r, u in lacking if r.principal == reader.principal and u.datastore.account_id == account]
        commands[key] = BY_ID["F24"].fix(
            principal=reader.principal,
            principal_type=reader.principal_type,
            role=WRITER_ROLE if any(u.write for u in same) else READER_ROLE,
            scope=account,
        )
    return list(commands.values())


def _where(usage: Usage) -> str:
    step = f" (step {usage.step})" if usage.step else ""
    return f"datastore {usage.datastore.name}{step} on {name_of(usage.datastore.account_id)}"


def _described(readers: list[Reader]) -> str:
    return "; ".join(dict.fromkeys(r.described for r in readers))


@data_check("F27")
def compute_without_managed_identity(facts: DataPathFacts) -> Result:
    readers = [r for r, _ in _read_by(facts, facts.identity_usages)] or [reader_of(facts)]
    evidence: dict[str, object] = {
        "compute": f"{facts.compute.name} ({facts.compute.kind})",
        "job identity": facts.job_identity,
        "reads identity-based data as": _described(readers),
    }
    missing = [r for r in readers if r.principal is None and r.principal_type != "User"]
    if not facts.identity_usages or not missing:
        principals = ", ".join(dict.fromkeys(r.principal for r in readers if r.principal))
        return result("F27", "pass", {**evidence, "principal": principals} if principals else evidence)
    if facts.compute.kind == "Serverless":
        fix = "give the workspace a user-assigned identity, or submit the job with identity: type: user_identity"
    elif facts.compute.kind == "Kubernetes":
        fix = BY_ID["F14"].fix(**_values(facts), cluster_id="<cluster-id>", identity_id="<identity-id>")
        fix = f"attach the compute with a user-assigned identity (an amlwire AttachedCompute does): {fix}"
    else:
        fix = BY_ID["F27"].fix(**_values(facts))
    return result("F27", "fail", {**evidence, "missing": missing[0].missing}, fix)


@data_check("F24")
def data_reader_lacks_role(facts: DataPathFacts) -> Result:
    if why := _unreadable(facts, "role assignments"):
        return skip("F24", why)
    stored = {
        _where(u): f"read with its stored {u.datastore.credential_type} (F26, F17)" for u in facts.credential_usages
    }
    if not facts.identity_usages:
        return result("F24", "pass", {"identity-based datastores on the path": "none", **stored})
    pairs = _read_by(facts, facts.identity_usages)
    known = [(r, u) for r, u in pairs if r.principal]
    if not known:
        reader = pairs[0][0]
        return skip("F24", f"no principal to check ({reader.described}): {reader.missing}")
    lacking = _lacking(facts)
    evidence = {
        "reader": "; ".join(dict.fromkeys(f"{r.described}, principal {r.principal}" for r, _ in known)),
        **{
            _where(u): ("needs write: " if u.write else "reads: ") + ("no role" if (r, u) in lacking else "role held")
            for r, u in known
        },
        **stored,
    }
    if not lacking:
        return result("F24", "pass", evidence)
    commands = _grant(lacking)
    reader = lacking[0][0]
    accounts = ", ".join(dict.fromkeys(name_of(u.datastore.account_id) for r, u in lacking if r == reader))
    headline = (
        f"principal {reader.principal} ({reader.described}) needs a Storage Blob Data role on {accounts}: {commands[0]}"
    )
    return Result(
        "F24",
        BY_ID["F24"].title,
        "fail",
        {k: str(v) for k, v in evidence.items()},
        "; ".join(commands),
        headline=headline,
    )


@data_check("F25")
def roles_only_on_workspace_identity(facts: DataPathFacts) -> Result:
    workspace_principal = facts.workspace.identity_principal_id
    if why := _unreadable(facts, "role assignments"):
        return skip("F25", why)
    if not workspace_principal:
        return result("F25", "pass", {"workspace identity": "none"})
    misplaced = [(r, u) for r, u in _lacking(facts) if _held(facts, workspace_principal, u)]
    readers = [r for r, _ in _read_by(facts, facts.identity_usages)] or [reader_of(facts)]
    evidence: dict[str, object] = {"workspace identity": workspace_principal, "job reads with": _described(readers)}
    if not misplaced:
        return result("F25", "pass", evidence)
    evidence |= {_where(u): "role held by the workspace identity only" for _, u in misplaced}
    reader, usage = misplaced[0]
    return result(
        "F25",
        "fail",
        evidence,
        BY_ID["F25"].fix(
            principal=reader.principal,
            principal_type=reader.principal_type,
            role=WRITER_ROLE if any(u.write for r, u in misplaced if r == reader) else READER_ROLE,
            scope=usage.datastore.account_id,
        ),
    )


@data_check("F16")
def data_role_still_propagating(facts: DataPathFacts) -> Result:
    if why := _unreadable(facts, "role assignments"):
        return skip("F16", why)
    known = [(r, u) for r, u in _read_by(facts, facts.identity_usages) if r.principal]
    if facts.identity_usages and not known:
        reader = reader_of(facts, facts.identity_usages[0])
        return skip("F16", f"no principal to check ({reader.described}): {reader.missing}")
    held = {a.name: a for r, u in known for a in _held(facts, r.principal or "", u)}
    young = still_propagating(held.values(), facts.now, facts.role_propagation)
    if not young:
        return result("F16", "pass", {"assignments": "older than the propagation window"})
    until = rfc3339(max(when for _, when in young))
    evidence = {
        f"{name_of(a.scope)} assigned": f"{rfc3339(a.created_on)}, effective by {rfc3339(when)}"
        for a, when in young
        if a.created_on
    }
    return result("F16", "fail", evidence, BY_ID["F16"].fix(until=until))


def _way_out(facts: DataPathFacts, usage: Usage) -> str:
    if usage.datastore.system:
        return BY_ID["F26"].command("system", **_values(facts))
    return (
        f"create an identity-based datastore for {name_of(usage.datastore.account_id)} (az ml datastore create "
        f"--file {usage.datastore.name}-identity.yml -g {facts.workspace_group} -w {facts.workspace_name}, with no "
        f"credentials) and point the job at it"
    )


@data_check("F26")
def key_datastore_without_credentials(facts: DataPathFacts) -> Result:
    keyed = facts.credential_usages
    if not keyed:
        return result("F26", "pass", {"credential-based datastores on the path": "none"})
    unread = [u for u in keyed if u.datastore.name not in facts.secrets]
    if unread:
        return skip("F26", _unreadable(facts, "datastore secrets") or f"secrets of {unread[0].datastore.name} not read")
    empty = [u for u in keyed if not facts.secrets[u.datastore.name]]
    evidence = {
        f"datastore {u.datastore.name} ({u.datastore.credential_type})": "stored credential empty"
        if u in empty
        else "stored credential present"
        for u in keyed
    }
    if not empty:
        return result("F26", "pass", evidence)
    fixes = [
        _way_out(facts, u) if u.datastore.system else BY_ID["F26"].fix(datastore=u.datastore.name, **_values(facts))
        for u in empty
    ]
    headline = f"datastore {empty[0].datastore.name} holds no credential" + (
        " and, as a default datastore, cannot be repaired in place" if empty[0].datastore.system else ""
    )
    return Result("F26", BY_ID["F26"].title, "fail", evidence, "; ".join(dict.fromkeys(fixes)), headline=headline)


@data_check("F17")
def shared_keys_off_for_key_datastore(facts: DataPathFacts) -> Result:
    if why := _unreadable(facts, "storage"):
        return skip("F17", why)
    refused = [
        u
        for u in facts.credential_usages
        if (s := facts.storage_of(u)) is not None and s.allow_shared_key_access is False
    ]
    evidence = {
        _where(u): f"{u.datastore.credential_type}, allowSharedKeyAccess {s.allow_shared_key_access}"
        for u in facts.credential_usages
        if (s := facts.storage_of(u)) is not None
    } or {"credential-based datastores on the path": "none"}
    if not refused:
        return result("F17", "pass", evidence)
    return result("F17", "fail", evidence, "; ".join(dict.fromkeys(_way_out(facts, u) for u in refused)))


def secret_readers(facts: DataPathFacts) -> list[Reader]:
    """Who fetches the stored credential of a credential-based datastore on the path: the submitting user (the
    CLI and SDK read it to upload code and inputs), and at run time the principal the job reads data with when
    that is a managed identity (the compute's: a Kubernetes compute's attached identity, or the fallback of a job
    without identity)."""
    readers = [Reader(facts.user, "User", "the submitting user (uploads code and inputs)")] if facts.user else []
    for reader, _ in _read_by(facts, facts.credential_usages):
        if reader.principal and reader.principal_type == "ServicePrincipal":
            readers.append(replace(reader, described=f"{reader.described}, at run time"))
    return list({r.principal: r for r in readers}.values())


def _may_list_secrets(facts: DataPathFacts, principal: str) -> list[str]:
    """The names of the principal's roles over the workspace that allow listsecrets."""
    return [
        d.name
        for a in facts.workspace_roles.get(principal, [])
        if a.applies_to(principal)
        and scope_covers(a.scope, facts.workspace.id)
        and (d := facts.role_definitions.get(a.role_guid)) is not None
        and d.allows(LIST_SECRETS)
    ]


@data_check("F28")
def reader_cannot_list_datastore_secrets(facts: DataPathFacts) -> Result:
    if not facts.credential_usages:
        return result("F28", "pass", {"credential-based datastores on the path": "none"})
    readers = secret_readers(facts)
    if not readers:
        return skip("F28", "pass --user OBJECT_ID to check the user's datastore permissions")
    if why := _unreadable(facts, "workspace role assignments"):
        return skip("F28", why)
    granting = {r.principal or "": _may_list_secrets(facts, r.principal or "") for r in readers}
    evidence = {
        f"{r.described}, principal {r.principal}": "roles granting listsecrets: "
        + (", ".join(granting[r.principal or ""]) or "none")
        for r in readers
    }
    lacking = [r for r in readers if not granting[r.principal or ""]]
    if not lacking:
        return result("F28", "pass", evidence)
    fixes = [
        BY_ID["F28"].fix(principal=r.principal, principal_type=r.principal_type, **_values(facts)) for r in lacking
    ]
    headline = f"principal {lacking[0].principal} ({lacking[0].described}) may not list datastore secrets: {fixes[0]}"
    return Result("F28", BY_ID["F28"].title, "fail", evidence, "; ".join(fixes), headline=headline)


@data_check("F29")
def storage_closed_to_compute(facts: DataPathFacts) -> Result:
    if why := _unreadable(facts, "storage"):
        return skip("F29", why)
    subnet = (facts.compute.subnet or "").lower()
    network = subnet.split("/subnets/", 1)[0]
    evidence: dict[str, object] = {"compute subnet": facts.compute.subnet or "none (no virtual network)"}
    closed: list[StorageNetwork] = []
    for account in dict.fromkeys(u.datastore.account_id.lower() for u in facts.usages):
        storage = facts.storage.get(account)
        if storage is None or not storage.closed:
            continue
        reachable = bool(subnet) and (
            any(e.lower().split("/subnets/", 1)[0] == network for e in storage.endpoint_subnets)
            or (storage.public_network_access != "Disabled" and subnet in {r.lower() for r in storage.network_rules})
        )
        evidence[name_of(storage.id)] = (
            f"publicNetworkAccess {storage.public_network_access}, defaultAction {storage.default_action}, "
            f"{len(storage.endpoint_subnets)} approved private endpoint(s)"
        )
        if not reachable:
            closed.append(storage)
    if not closed:
        return result("F29", "pass", evidence)
    fixes = [BY_ID["F29"].fix(account=name_of(s.id), account_id=s.id) for s in closed]
    return result("F29", "fail", evidence, "; ".join(fixes))


def diagnose_data_path(facts: DataPathFacts) -> list[Result]:
    """Every data-path check in failure-id order."""
    return [named(run(facts), run.__name__) for _, run in sorted(DATA_CHECKS, key=lambda c: c[0])]


# -- a submitted job, as AML's REST API returns it --------------------------------------------------------
DATASTORE_URI = re.compile(r"^azureml://datastores/([^/]+)/paths/", re.IGNORECASE)
DEFAULT_DATASTORE = ""  # an output with no path goes to the workspace's default datastore
IDENTITY_KINDS: dict[str, JobIdentity] = {"managed": "managed", "useridentity": "user", "amltoken": "aml-token"}


@dataclass(frozen=True)
class JobPath:
    """What a job needs from the data path: its compute, identity setting and the datastores it touches."""

    job: JobFacts
    compute: str  # compute name, or SERVERLESS
    identity: JobIdentity
    identity_selector: str | None
    datastores: tuple[tuple[str, bool, str], ...]  # (datastore name or DEFAULT_DATASTORE, written, step)
    step_identities: dict[str, StepIdentity] = field(default_factory=dict)  # steps with an identity of their own


def _field(identity: dict[str, Any], camel: str) -> Any:
    """A job identity's field: camelCase at a job's root, snake_case on a pipeline step (azure-ai-ml 1.35.2 sends
    {"identity_type": "UserIdentity"} or {"client_id": ..., "identity_type": "Managed"} per step)."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return identity.get(camel) or identity.get(snake)


def job_path(body: dict[str, Any]) -> JobPath:
    """Read a job's compute, identity and datastores from its REST body (a pipeline: its steps, which inherit
    the pipeline's compute and identity)."""
    props = body.get("properties") or {}
    steps = [("", props)]
    if props.get("jobType") == "Pipeline":
        steps = [(name, child) for name, child in (props.get("jobs") or {}).items() if isinstance(child, dict)]
    settings = props.get("settings") or {}
    default_compute = props.get("computeId") or settings.get("default_compute") or settings.get("defaultCompute")
    first = steps[0][1] if steps else props
    compute = first.get("computeId") or first.get("compute") or default_compute
    setting = _identity_setting(props.get("identity") or {})
    used: list[tuple[str, bool, str]] = []
    for name, step in steps:
        for value in (step.get("inputs") or {}).values():
            found = DATASTORE_URI.match(str((value or {}).get("uri") or (value or {}).get("path") or ""))
            if found:
                used.append((found.group(1), False, name))
        for value in (step.get("outputs") or {}).values():
            found = DATASTORE_URI.match(str((value or {}).get("uri") or ""))
            used.append((found.group(1) if found else DEFAULT_DATASTORE, True, name))
    error = ((props.get("error") or {}).get("error") or props.get("error") or {}) if props.get("error") else {}
    system = body.get("systemData") or {}
    return JobPath(
        JobFacts(
            name=str(body.get("name", "")),
            job_type=str(props.get("jobType", "")),
            status=str(props.get("status", "")),
            error=f"{error.get('code', '')}: {error.get('message', '')}".strip(": ") if error else "",
            submitted_by=str(system.get("createdBy") or ""),
        ),
        name_of(str(compute)) if compute else SERVERLESS,
        setting.identity,
        setting.selector,
        tuple(dict.fromkeys(used)),
        {name: _identity_setting(step["identity"]) for name, step in steps if name and step.get("identity")},
    )


def _identity_setting(identity: dict[str, Any]) -> StepIdentity:
    return StepIdentity(
        IDENTITY_KINDS.get(str(_field(identity, "identityType") or "AMLToken").lower(), "aml-token"),
        _field(identity, "clientId") or _field(identity, "resourceId") or _field(identity, "objectId"),
    )
