"""amlwire doctor on a job's data path, the gathering part: read-only calls through the Azure port."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol

from amlwire.domain.azure import RoleAssignment, WorkspaceInfo, WorkspaceRef
from amlwire.domain.datapath import (
    DEFAULT_DATASTORE,
    ComputeIdentities,
    DataPathFacts,
    DatastoreInfo,
    JobIdentity,
    JobPath,
    RoleDefinitionInfo,
    StorageNetwork,
    Usage,
    reader_of,
    secret_readers,
)
from amlwire.domain.jobs import JobDetails
from amlwire.reconcile.doctor import DoctorCannotRun, read_or_note


class DataPathPort(Protocol):
    """The Azure reads the data-path doctor makes (it never writes)."""

    def get_workspace(self, workspace: WorkspaceRef) -> WorkspaceInfo: ...
    def workspace_user_assigned(self, workspace: WorkspaceRef) -> tuple[str, ...]: ...
    def get_compute_identities(self, workspace: WorkspaceRef, name: str) -> ComputeIdentities: ...
    def list_datastores(self, workspace: WorkspaceRef) -> list[DatastoreInfo]: ...
    def datastore_has_secret(self, workspace: WorkspaceRef, name: str) -> bool: ...
    def get_storage_network(self, account_id: str) -> StorageNetwork: ...
    def list_role_assignments(self, scope: str, principal_id: str) -> list[RoleAssignment]: ...
    def get_role_definition(self, definition_id: str) -> RoleDefinitionInfo: ...
    def get_job_path(self, workspace: WorkspaceRef, name: str) -> JobPath: ...
    def job_details(self, workspace: WorkspaceRef, name: str) -> JobDetails: ...


@dataclass(frozen=True)
class DataPathTarget:
    """What the user asked about: a job, or a compute with the identity setting and datastores a job would use."""

    workspace: WorkspaceRef
    compute: str | None = None
    job: str | None = None
    job_identity: JobIdentity | None = None
    user: str | None = None
    datastores: tuple[str, ...] = ()


def gather_data_path(
    target: DataPathTarget, azure: DataPathPort, now: datetime, role_propagation: timedelta
) -> DataPathFacts:
    ws = target.workspace
    workspace = read_or_note(None, "workspace", partial(azure.get_workspace, ws), None)
    if workspace is None:
        raise DoctorCannotRun(
            f"AML workspace {ws.group}/{ws.name} does not exist in subscription {ws.subscription}: check "
            f"--workspace-group and --workspace"
        )
    path = _job(target, azure)
    compute_name = target.compute or (path.compute if path else None)
    if not compute_name:
        raise DoctorCannotRun("name the compute (--compute NAME, or serverless) or a job (--job NAME)")
    compute = read_or_note(None, "compute", partial(azure.get_compute_identities, ws, compute_name), None)
    if compute is None:
        raise DoctorCannotRun(f"compute {compute_name} does not exist in workspace {ws.name} (az ml compute list)")
    facts = DataPathFacts(
        workspace=workspace,
        workspace_group=ws.group,
        workspace_name=ws.name,
        compute=compute,
        job_identity=target.job_identity or (path.identity if path else "aml-token"),
        now=now,
        role_propagation=role_propagation,
        identity_selector=path.identity_selector if path else None,
        user=target.user,
        job=path.job if path else None,
    )
    if path is not None and path.job.status == "Failed":
        details = read_or_note(facts, "job details", partial(azure.job_details, ws, path.job.name), JobDetails())
        error = details.error or {}
        facts.job = replace(path.job, error=f"{error.get('code', '')}: {error.get('message', '')}".strip(": "))
    facts.usages = _usages(target, path, read_or_note(facts, "datastores", partial(azure.list_datastores, ws), []))
    if compute.kind == "Serverless":
        facts.workspace_user_assigned = read_or_note(
            facts, "workspace identities", partial(azure.workspace_user_assigned, ws), ()
        )
    _gather_storage(facts, azure, ws)
    _gather_roles(facts, azure)
    return facts


def _job(target: DataPathTarget, azure: DataPathPort) -> JobPath | None:
    if target.job is None:
        return None
    path = read_or_note(None, "job", partial(azure.get_job_path, target.workspace, target.job), None)
    if path is None:
        raise DoctorCannotRun(f"AML job {target.job} does not exist in workspace {target.workspace.name}")
    return path


def _usages(target: DataPathTarget, path: JobPath | None, datastores: list[DatastoreInfo]) -> list[Usage]:
    """The datastores the job touches: the job's own, or the named ones read plus the default one written (where
    every job's outputs go)."""
    by_name = {d.name.lower(): d for d in datastores}
    default = next((d for d in datastores if d.is_default), None)
    wanted = list(path.datastores) if path else [(name, False, "") for name in target.datastores]
    if path is None:
        wanted.append((DEFAULT_DATASTORE, True, ""))
    usages: list[Usage] = []
    for name, write, step in wanted:
        datastore = default if name == DEFAULT_DATASTORE else by_name.get(name.lower())
        if datastore is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise DoctorCannotRun(f"datastore {name or '(default)'} does not exist in the workspace (known: {known})")
        usage = Usage(datastore, write, step, path.step_identities.get(step) if path else None)
        if usage not in usages:
            usages.append(usage)
    return usages


def _gather_storage(facts: DataPathFacts, azure: DataPathPort, ws: WorkspaceRef) -> None:
    for account in dict.fromkeys(u.datastore.account_id for u in facts.usages):
        found = read_or_note(facts, "storage", partial(azure.get_storage_network, account), None)
        if found is not None:
            facts.storage[account.lower()] = found
    for usage in facts.credential_usages:
        name = usage.datastore.name
        if name not in facts.secrets and "datastore secrets" not in facts.unreadable:
            has = read_or_note(facts, "datastore secrets", partial(azure.datastore_has_secret, ws, name), None)
            if has is not None:
                facts.secrets[name] = has


def _gather_roles(facts: DataPathFacts, azure: DataPathPort) -> None:
    """The role assignments over each account of its readers and of the workspace identity (Azure lists those at
    the scope, above it and below it), and over the workspace of whoever fetches a datastore's stored credential,
    with their definitions."""
    for account in dict.fromkeys(u.datastore.account_id for u in facts.identity_usages):
        readers = [reader_of(facts, u).principal for u in facts.identity_usages if u.datastore.account_id == account]
        for principal in dict.fromkeys(p for p in (*readers, facts.workspace.identity_principal_id) if p):
            read = partial(azure.list_role_assignments, account, principal)
            facts.roles.setdefault(principal, []).extend(read_or_note(facts, "role assignments", read, []))
    for reader in secret_readers(facts):
        principal = reader.principal or ""
        read = partial(azure.list_role_assignments, facts.workspace.id, principal)
        facts.workspace_roles[principal] = read_or_note(facts, "workspace role assignments", read, [])
    definitions = {a.role_definition_id for found in facts.workspace_roles.values() for a in found}
    for definition in sorted(definitions):
        found = read_or_note(facts, "workspace role assignments", partial(azure.get_role_definition, definition), None)
        if found is not None:
            facts.role_definitions[found.guid] = found
