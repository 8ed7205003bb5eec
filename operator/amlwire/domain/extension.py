"""The AzureML extension: the identity settings it needs, and what to do when they differ."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from amlwire.api import reasons as r
from amlwire.domain.azure import EXTENSION_TYPE, ExtensionInfo, same_id
from amlwire.domain.failures import BY_ID
from amlwire.domain.operations import RUNNING, SUCCEEDED, Observed, failed

IDENTITY_TYPE = "identityType"
IDENTITY_ID = "userAssignedIdentityResourceId"
ENABLE_TRAINING = "enableTraining"
BUSY_STATES = {"creating", "updating", "deleting", "accepted", "running", "pending"}
HEALTHY_STATES = {"succeeded", "updating"}  # installed: a compute can be attached, even while settings change


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
    lacks: tuple[str, ...] = ()  # the CLI's settings the extension has not (said in Verify mode)


def desired_settings(extra: Mapping[str, str], identity_id: str, set_identity: bool = True) -> dict[str, str]:
    """What the extension should carry: training on (it defaults to off) unless the spec says otherwise, the
    spec's settings, and (field practice, undocumented) the identity settings."""
    settings = {ENABLE_TRAINING: "True", **extra}
    return {**settings, IDENTITY_TYPE: "UserAssigned", IDENTITY_ID: identity_id} if set_identity else settings


def cli_settings(cluster_id: str, cluster_name: str, location: str, node_count: int | None) -> dict[str, str]:
    """What `az k8s-extension create --extension-type Microsoft.AzureML.Kubernetes` adds on an AKS cluster beyond
    the user's settings (azure-cli-extensions, partner_extensions/AzureMLKubernetes.py, Create): a bare ARM PUT
    has none of them. The user's own value of any of these keys wins."""
    where = location.lower()
    settings = {
        "cluster_name": cluster_id,
        "clusterId": cluster_id,
        "prometheus.prometheusSpec.externalLabels.cluster_name": cluster_id,
        "domain": f"{where}.cloudapp.azure.com",
        "location": where,
        "jobSchedulerLocation": where,
        "cluster_name_friendly": cluster_name,
        "servicebus.enabled": "false",
        "relayserver.enabled": "false",
        "nginxIngress.enabled": "true",
        "enableInference": "False",
    }
    if node_count is not None and node_count < 3:  # a small cluster: no HA inference router
        settings |= {"clusterPurpose": "DevTest", "inferenceRouterHA": "false"}
    return settings


def lacking(current: Mapping[str, str], defaults: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str]:
    """The CLI's settings the extension does not carry at all (a value someone set is theirs, never changed)."""
    return {k: v for k, v in defaults.items() if k not in current and k not in desired}


def trains(settings: Mapping[str, str]) -> bool:
    return settings.get(ENABLE_TRAINING, "False").strip().lower() == "true"


def drifted(current: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str]:
    """Desired settings whose current value differs (resource IDs compare case-insensitively)."""
    out = {}
    for key, value in desired.items():
        have = current.get(key)
        same = same_id(have, value) if key == IDENTITY_ID else have == value
        if not same:
            out[key] = value
    return out


def installed(found: ExtensionInfo | None) -> bool:
    return found is not None and found.provisioning_state.lower() in HEALTHY_STATES


def observed(found: ExtensionInfo | None) -> Observed:
    """Where an extension operation stands, read off the extension itself (no operation URL to ask)."""
    if found is None:
        return failed("the extension does not exist")
    state = found.provisioning_state.lower()
    if state in BUSY_STATES:
        return RUNNING
    if state == "succeeded":
        return SUCCEEDED
    said = f": {found.error}" if found.error else ""
    return failed(f"the extension is in provisioning state {found.provisioning_state}{said}")


def az_command(cluster_group: str, cluster: str, name: str, settings: Mapping[str, str], create: bool) -> str:
    config = " ".join(f"{k}={v}" for k, v in settings.items())
    values = {"group": cluster_group, "cluster": cluster, "name": name, "config": config}
    return BY_ID["F12"].fix(**values) if create else BY_ID["F12"].command("update", **values)


def _installer(configure: bool, command: str) -> Callable[[str, str, dict[str, str]], ExtensionDecision]:
    """The extension does not run on the cluster: amlwire installs it (Configure), or says how (Verify)."""

    def install(doing: str, missing: str, settings: dict[str, str]) -> ExtensionDecision:
        if configure:
            return ExtensionDecision(Action.CREATE, r.EXTENSION_INSTALLING, doing, settings)
        fix = f"{missing}; install it: {command}, or set spec.extension.mode: Configure"
        return ExtensionDecision(Action.REPORT, r.EXTENSION_MISSING, fix, {})

    return install


def decide_extension(
    found: ExtensionInfo | None,
    desired: Mapping[str, str],
    configure: bool,
    cluster_group: str,
    cluster: str,
    name: str,
    defaults: Mapping[str, str] | None = None,
) -> ExtensionDecision:
    """What to do about the extension; `defaults` are the settings the CLI adds (cli_settings), installed with
    it and added when absent."""
    defaults = defaults or {}
    install = _installer(configure, az_command(cluster_group, cluster, name, desired, create=True))
    if found is None:
        return install(
            f"installing the AzureML extension {name}",
            f"the AzureML extension {name} is not installed on {cluster}",
            {**defaults, **desired},
        )
    if found.extension_type.lower() != EXTENSION_TYPE.lower():
        return ExtensionDecision(
            Action.REPORT,
            r.EXTENSION_TYPE_MISMATCH,
            f"extension {name} on {cluster} is a {found.extension_type}, not {EXTENSION_TYPE}; "
            f"set spec.extension.name to the AzureML extension's name",
            {},
        )
    state = found.provisioning_state.lower()
    if state in BUSY_STATES:
        return ExtensionDecision(
            Action.WAIT, r.EXTENSION_PROVISIONING, f"extension {name} is {found.provisioning_state}", {}
        )
    changes = drifted(found.settings, desired)
    absent = lacking(found.settings, defaults, desired)
    said = f" (Azure said: {found.error})" if found.error else ""
    if state == "canceled":  # the install never finished: nothing runs on the cluster
        return install(
            f"extension {name}'s install was Canceled{said}; installing it again",
            f"extension {name}'s install on {cluster} was Canceled{said}, so it is not installed",
            {**defaults, **found.settings, **desired},
        )
    if state == "failed":
        if configure:
            return ExtensionDecision(
                Action.UPDATE,
                r.EXTENSION_REPAIRING,
                f"extension {name} is in provisioning state Failed{said}; re-applying its settings",
                {**absent, **desired},
            )
        return ExtensionDecision(
            Action.REPORT,
            r.EXTENSION_FAILED,
            f"extension {name} on {cluster} is in provisioning state Failed{said}; repair it: "
            f"{az_command(cluster_group, cluster, name, desired, create=False)}",
            {},
        )
    if changes:
        keys = ", ".join(sorted(changes))
        reason = (
            r.EXTENSION_IDENTITY_MISMATCH
            if {IDENTITY_TYPE, IDENTITY_ID} & set(changes)
            else r.EXTENSION_SETTINGS_DIFFER
        )
        if configure:  # with the CLI's settings it lacks: one write
            return ExtensionDecision(
                Action.UPDATE, reason, f"setting {keys} on extension {name}", {**absent, **changes}
            )
        return ExtensionDecision(
            Action.REPORT,
            reason,
            f"extension {name} settings {keys} differ from spec.extension and what keyless storage access needs; "
            f"run: {az_command(cluster_group, cluster, name, changes, create=False)}, or set "
            f"spec.extension.mode: Configure",
            {},
        )
    if absent:
        keys = ", ".join(sorted(absent))
        if configure:
            return ExtensionDecision(
                Action.UPDATE,
                r.EXTENSION_LACKS_CLI_SETTINGS,
                f"adding {keys} to extension {name}: az k8s-extension create sets them, a bare ARM PUT does not",
                absent,
            )
        return ExtensionDecision(
            Action.NONE,
            r.EXTENSION_LACKS_CLI_SETTINGS,
            f"extension {name} uses the identity for storage access, but lacks {keys}, which az k8s-extension "
            f"create sets and a bare ARM PUT does not; whether AML schedules jobs without them is unverified (jobs "
            f"that stay Queued are the sign). Add them: "
            f"{az_command(cluster_group, cluster, name, absent, create=False)}",
            {},
            tuple(sorted(absent)),
        )
    return ExtensionDecision(
        Action.NONE, r.EXTENSION_CONFIGURED, f"extension {name} uses the identity for storage access", {}
    )
