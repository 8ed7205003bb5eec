"""The AML compute attach: attach, adopt, or detach and re-attach what amlwire attached."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from amlwire.domain.azure import ComputeInfo, same_id

OWNER_TAG = "amlwire.io/attached-compute"
BUSY_STATES = {"creating", "updating", "deleting"}
MAX_ATTACH_ATTEMPTS = 3


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


def owned_by(compute: ComputeInfo, owner: str) -> bool:
    return compute.tags.get(OWNER_TAG) == owner


def decide_compute(
    found: ComputeInfo | None,
    name: str,
    cluster_id: str,
    identity_id: str,
    namespace: str,
    owner: str,
    attempts: int,
    detach_command: str,
) -> ComputeDecision:
    if found is None:
        if attempts >= MAX_ATTACH_ATTEMPTS:
            return ComputeDecision(
                ComputeAction.REPORT,
                "ComputeAttachFailed",
                f"attaching compute {name} failed {attempts} times; see the workspace's activity "
                f"log, fix the cause, then bump any field of the AttachedCompute to retry",
            )
        return ComputeDecision(ComputeAction.ATTACH, "ComputeAttaching", f"attaching compute {name}")
    if not same_id(found.cluster_id, cluster_id):
        return ComputeDecision(
            ComputeAction.REPORT,
            "ComputeNameConflict",
            f"compute {name} in the workspace is attached to another cluster "
            f"({found.cluster_id}); choose another spec.compute.name, or detach it: "
            f"{detach_command}",
        )
    state = found.provisioning_state.lower()
    if state in BUSY_STATES:
        return ComputeDecision(
            ComputeAction.WAIT, "ComputeProvisioning", f"compute {name} is {found.provisioning_state}"
        )
    ours = owned_by(found, owner)
    if state == "failed":
        errors = "; ".join(found.errors) or "no error details"
        if ours and attempts < MAX_ATTACH_ATTEMPTS:
            return ComputeDecision(
                ComputeAction.DETACH,
                "ComputeAttachFailed",
                f"compute {name} is Failed ({errors}); detaching it to attach again",
            )
        return ComputeDecision(
            ComputeAction.REPORT,
            "ComputeAttachFailed",
            f"compute {name} is Failed ({errors}); a Failed compute must be detached before it "
            f"can be attached again: {detach_command}",
        )
    wrong = _mismatch(found, identity_id, namespace)
    if wrong:
        if ours:
            return ComputeDecision(
                ComputeAction.DETACH,
                "ComputeIdentityMismatch",
                f"compute {name} {wrong}; detaching it to attach again with the identity",
            )
        return ComputeDecision(
            ComputeAction.REPORT,
            "ComputeIdentityMismatch",
            f"compute {name} {wrong}, and amlwire did not attach it, so it will not detach it; "
            f"detach it ({detach_command}) and amlwire attaches it with spec.identity, or choose "
            f"another spec.compute.name",
        )
    return ComputeDecision(
        ComputeAction.NONE, "ComputeAttached", f"compute {name} is attached with the user-assigned identity"
    )


def _mismatch(found: ComputeInfo, identity_id: str, namespace: str) -> str | None:
    if "userassigned" not in found.identity_type.lower().replace("_", ""):
        return f"is attached with identity type {found.identity_type}, not the user-assigned identity"
    if not any(same_id(i, identity_id) for i in found.identity_ids):
        return f"is attached with another user-assigned identity ({', '.join(found.identity_ids)})"
    if found.namespace and found.namespace != namespace:
        return f"runs jobs in namespace {found.namespace}, not {namespace}"
    return None
