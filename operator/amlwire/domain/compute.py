"""The AML compute attach: attach, adopt, or detach and re-attach what amlwire attached."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from amlwire.api import reasons as r
from amlwire.api import roles
from amlwire.domain.access import scope_covers
from amlwire.domain.azure import ComputeInfo, RoleAssignment, same_id
from amlwire.domain.operations import RUNNING, SUCCEEDED, Observed, failed

OWNER_TAG = "amlwire-attached-compute"  # ARM tag names may not contain '/'
FORMER_OWNER_TAG = "amlwire.io/attached-compute"  # what amlwire wrote before: computes attached then stay owned
BUSY_STATES = {"creating", "updating", "deleting"}
ATTACH_SETTLE_SECONDS = 60.0  # how long an accepted attach may not show in the workspace yet


class ComputeAction(Enum):
    NONE = "none"
    ATTACH = "attach"
    DETACH = "detach"
    WAIT = "wait"
    REPORT = "report"


@dataclass(frozen=True)
class ComputeDecision:
    action: ComputeAction
    reason: str
    message: str


# A workspace with a user-assigned identity attaches a cluster only when that identity holds all of these on it
# (Learn: attach a Kubernetes cluster; AML-Kubernetes 279: "AKS role check failed for user assigned identity")
UAMI_ROLE_CHECK = "AKS role check failed for user assigned identity"  # Azure's words when one is missing
UAMI_CLUSTER_ROLES = {
    name: roles.guid(name)
    for name in ("Reader", "Kubernetes Extension Contributor", "Azure Kubernetes Service Cluster Admin Role")
}


def missing_uami_cluster_roles(assignments: Sequence[RoleAssignment], principal: str, cluster_id: str) -> list[str]:
    """The roles a user-assigned workspace identity lacks on the cluster for the attach (each, as Learn says)."""
    return [name for name, guid in UAMI_CLUSTER_ROLES.items() if not _holds(assignments, principal, guid, cluster_id)]


def cluster_role_command(principal: str, role: str, cluster_id: str) -> str:
    return (
        f"az role assignment create --assignee-object-id {principal} --assignee-principal-type ServicePrincipal "
        f'--role "{role}" --scope {cluster_id}'
    )


def _holds(assignments: Sequence[RoleAssignment], principal: str, role: str, scope: str) -> bool:
    return any(a.applies_to(principal) and a.role_guid == role and scope_covers(a.scope, scope) for a in assignments)


def owned_by(compute: ComputeInfo, owner: str) -> bool:
    return owner in (compute.tags.get(OWNER_TAG), compute.tags.get(FORMER_OWNER_TAG))


def ours(compute: ComputeInfo, owner: str, adopted_from: str | None) -> bool:
    """Attached by this AttachedCompute, or adopted by it from one that is gone (status.computeAdoptedFrom)."""
    return owned_by(compute, owner) or (adopted_from is not None and tagged_owner(compute) == adopted_from)


def tagged_owner(compute: ComputeInfo) -> str | None:
    """The AttachedCompute that attached the compute, as its tag says (None: not attached by amlwire)."""
    return compute.tags.get(OWNER_TAG) or compute.tags.get(FORMER_OWNER_TAG)


def errors_of(compute: ComputeInfo) -> str:
    return "; ".join(compute.errors) or "no error details"


def decide_compute(
    found: ComputeInfo | None,
    name: str,
    cluster_id: str,
    identity_id: str,
    namespace: str,
    owner: str,
    detach_command: str,
) -> ComputeDecision:
    """What the compute needs, seen on its own (the ledger counts the attempts)."""
    if found is None:
        return ComputeDecision(ComputeAction.ATTACH, r.COMPUTE_ATTACHING, f"attaching compute {name}")
    if not same_id(found.cluster_id, cluster_id):
        return ComputeDecision(
            ComputeAction.REPORT,
            r.COMPUTE_NAME_CONFLICT,
            f"compute {name} in the workspace is attached to another cluster "
            f"({found.cluster_id}); choose another spec.compute.name, or detach it: "
            f"{detach_command}",
        )
    state = found.provisioning_state.lower()
    if state in BUSY_STATES:
        return ComputeDecision(
            ComputeAction.WAIT, r.COMPUTE_PROVISIONING, f"compute {name} is {found.provisioning_state}"
        )
    ours = owned_by(found, owner)
    if state == "failed":
        if ours:
            return ComputeDecision(
                ComputeAction.DETACH,
                r.COMPUTE_ATTACH_FAILED,
                f"compute {name} is Failed ({errors_of(found)}); detaching it to attach again",
            )
        return ComputeDecision(
            ComputeAction.REPORT,
            r.COMPUTE_ATTACH_FAILED,
            f"compute {name} is Failed ({errors_of(found)}); a Failed compute must be detached before it "
            f"can be attached again: {detach_command}",
        )
    wrong = mismatch(found, identity_id, namespace)
    if wrong:
        if ours:
            return ComputeDecision(
                ComputeAction.DETACH,
                r.COMPUTE_IDENTITY_MISMATCH,
                f"compute {name} {wrong}; detaching it to attach again with the identity",
            )
        return ComputeDecision(
            ComputeAction.REPORT,
            r.COMPUTE_IDENTITY_MISMATCH,
            f"compute {name} {wrong}, and amlwire did not attach it, so it will not detach it; "
            f"detach it ({detach_command}) and amlwire attaches it with spec.identity, or choose "
            f"another spec.compute.name",
        )
    return ComputeDecision(
        ComputeAction.NONE, r.COMPUTE_ATTACHED, f"compute {name} is attached with the user-assigned identity"
    )


def mismatch(found: ComputeInfo, identity_id: str, namespace: str) -> str | None:
    if "userassigned" not in found.identity_type.lower().replace("_", ""):
        return f"is attached with identity type {found.identity_type}, not the user-assigned identity"
    if not any(same_id(i, identity_id) for i in found.identity_ids):
        return f"is attached with another user-assigned identity ({', '.join(found.identity_ids)})"
    if found.namespace and found.namespace != namespace:
        return f"runs jobs in namespace {found.namespace}, not {namespace}"
    return None


def observed_attach(found: ComputeInfo | None, age: float, detached_since: bool) -> Observed:
    """Where an attach amlwire started stands, read off the compute.

    A compute not in the workspace yet may still appear (Azure accepted the attach), unless amlwire has
    detached it since (a failed attempt) or the settle time is over.
    """
    if found is None:
        if detached_since:
            return failed("the compute was detached to attach again")
        return RUNNING if age < ATTACH_SETTLE_SECONDS else failed("the attach left no compute in the workspace")
    state = found.provisioning_state.lower()
    if state in BUSY_STATES:
        return RUNNING
    if state == "failed":
        return failed(errors_of(found))
    return SUCCEEDED


def observed_detach(found: ComputeInfo | None) -> Observed:
    """Where a detach amlwire started stands: over when the compute is gone."""
    if found is None:
        return SUCCEEDED
    if found.provisioning_state.lower() == "deleting":
        return RUNNING
    return failed(f"the compute is {found.provisioning_state}: {errors_of(found)}")
