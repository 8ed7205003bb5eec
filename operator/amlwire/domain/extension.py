"""The AzureML extension: the identity settings it needs, and what to do when they differ."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from amlwire.domain.azure import EXTENSION_TYPE, ExtensionInfo, same_id

IDENTITY_TYPE = "identityType"
IDENTITY_ID = "userAssignedIdentityResourceId"
BUSY_STATES = {"creating", "updating", "deleting", "accepted", "running", "pending"}


class Action(Enum):
    NONE = "none"
    CREATE = "create"
    UPDATE = "update"
    WAIT = "wait"
    REPORT = "report"


@dataclass(frozen=True)
class ExtensionDecision:
    action: Action
    reason: str
    message: str
    settings: dict[str, str]


def desired_settings(extra: Mapping[str, str], identity_id: str) -> dict[str, str]:
    return {**extra, IDENTITY_TYPE: "UserAssigned", IDENTITY_ID: identity_id}


def drifted(current: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str]:
    """Desired settings whose current value differs (resource IDs compare case-insensitively)."""
    out = {}
    for key, value in desired.items():
        have = current.get(key)
        same = same_id(have, value) if key == IDENTITY_ID else have == value
        if not same:
            out[key] = value
    return out


def az_command(cluster_group: str, cluster: str, name: str, settings: Mapping[str, str], create: bool) -> str:
    config = " ".join(f"{k}={v}" for k, v in settings.items())
    verb = "create --extension-type " + EXTENSION_TYPE if create else "update"
    return (
        f"az k8s-extension {verb} --name {name} --cluster-type managedClusters --cluster-name {cluster} "
        f"--resource-group {cluster_group} --config {config}"
    )


def decide_extension(
    found: ExtensionInfo | None,
    desired: Mapping[str, str],
    configure: bool,
    cluster_group: str,
    cluster: str,
    name: str,
) -> ExtensionDecision:
    if found is None:
        if configure:
            return ExtensionDecision(
                Action.CREATE, "ExtensionInstalling", f"installing the AzureML extension {name}", dict(desired)
            )
        return ExtensionDecision(
            Action.REPORT,
            "ExtensionMissing",
            f"the AzureML extension {name} is not installed on {cluster}; install it: "
            f"{az_command(cluster_group, cluster, name, desired, create=True)}, or set "
            f"spec.extension.mode: Configure",
            {},
        )
    if found.extension_type.lower() != EXTENSION_TYPE.lower():
        return ExtensionDecision(
            Action.REPORT,
            "ExtensionTypeMismatch",
            f"extension {name} on {cluster} is a {found.extension_type}, not {EXTENSION_TYPE}; "
            f"set spec.extension.name to the AzureML extension's name",
            {},
        )
    state = found.provisioning_state.lower()
    if state in BUSY_STATES:
        return ExtensionDecision(
            Action.WAIT, "ExtensionProvisioning", f"extension {name} is {found.provisioning_state}", {}
        )
    changes = drifted(found.settings, desired)
    if state == "failed":
        if configure:
            return ExtensionDecision(
                Action.UPDATE,
                "ExtensionRepairing",
                f"extension {name} is in provisioning state Failed; re-applying its settings",
                dict(desired),
            )
        return ExtensionDecision(
            Action.REPORT,
            "ExtensionFailed",
            f"extension {name} on {cluster} is in provisioning state Failed; repair it: "
            f"{az_command(cluster_group, cluster, name, desired, create=False)}",
            {},
        )
    if changes:
        keys = ", ".join(sorted(changes))
        if configure:
            return ExtensionDecision(
                Action.UPDATE, "ExtensionIdentityMismatch", f"setting {keys} on extension {name}", changes
            )
        return ExtensionDecision(
            Action.REPORT,
            "ExtensionIdentityMismatch",
            f"extension {name} settings {keys} differ from what keyless storage access needs; "
            f"run: {az_command(cluster_group, cluster, name, changes, create=False)}, or set "
            f"spec.extension.mode: Configure",
            {},
        )
    return ExtensionDecision(
        Action.NONE, "ExtensionConfigured", f"extension {name} uses the identity for storage access", {}
    )
