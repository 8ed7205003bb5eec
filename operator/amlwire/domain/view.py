"""Typed views of an AttachedCompute: where its spec points in Azure, and what other objects need of it.

`Target` is the ARM side of a valid spec. `ComputeView` is what the operator's index holds of each
AttachedCompute (read tolerantly from the raw object, so a malformed one never breaks the index): AmlJobs
admit themselves against it, AttachedComputes find their neighbours (sharing an identity) and siblings
(sharing a cluster) in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import AttachedComputeSpec
from amlwire.domain.access import role_guid
from amlwire.domain.azure import ResourceId, WorkspaceRef, managed_cluster_id, same_id
from amlwire.domain.federation import subject_of

WIRING_CONDITIONS = (r.FEDERATION_READY, r.SERVICE_ACCOUNTS_READY, r.EXTENSION_READY, r.ACCESS_READY, r.COMPUTE_READY)
ConditionState = tuple[str, str, str]  # status, reason, message


@dataclass(frozen=True)
class Target:
    """Where a valid AttachedCompute spec points, as Azure addresses it."""

    workspace: WorkspaceRef
    cluster_id: str
    cluster_group: str
    cluster_name: str
    identity_id: str
    compute_name: str
    compute_namespace: str

    @property
    def identity(self) -> ResourceId:
        return ResourceId.parse(self.identity_id)

    @property
    def detach_command_values(self) -> dict[str, str]:
        return {"compute": self.compute_name, "workspace_group": self.workspace.group, "workspace": self.workspace.name}


def target_of(spec: AttachedComputeSpec) -> Target:
    w, c = spec.workspace, spec.cluster
    return Target(
        workspace=WorkspaceRef(w.subscription_id, w.resource_group, w.name),
        cluster_id=managed_cluster_id(spec.cluster_subscription_id, c.resource_group, c.name),
        cluster_group=c.resource_group,
        cluster_name=c.name,
        identity_id=spec.identity.resource_id,
        compute_name=spec.compute.name,
        compute_namespace=spec.compute.namespace,
    )


@dataclass(frozen=True)
class ComputeHealth:
    """What an AttachedCompute says about its links (type -> (status, reason, message))."""

    name: str
    conditions: Mapping[str, ConditionState] = field(default_factory=dict)
    subjects: tuple[str, ...] = ()  # the service accounts it federates
    identity: str = "the identity"
    federated: tuple[str, ...] | None = None  # subjects a credential on the identity federates now (None: not read)

    def broken(self) -> list[str]:
        return [
            f"{t} is {s} ({reason}: {m})"
            for t in WIRING_CONDITIONS
            for s, reason, m in [self.conditions.get(t, ("Unknown", "NotReported", ""))]
            if s != "True"
        ]

    def state(self, type_: str) -> ConditionState | None:
        return self.conditions.get(type_)


@dataclass(frozen=True)
class ComputeView:
    """One AttachedCompute as the operator's index holds it."""

    name: str
    workspace: WorkspaceRef
    cluster_id: str
    identity_id: str
    compute_name: str
    compute_namespace: str
    instance_types: tuple[str, ...] = ()
    gpus: Mapping[str, int] = field(default_factory=dict)  # nvidia.com/gpu limit per instance type
    allowed_namespaces: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    grants: tuple[tuple[str, str], ...] = ()  # (scope lower-case, role GUID)
    issuer: str | None = None
    identity_client_id: str | None = None
    conditions: Mapping[str, ConditionState] = field(default_factory=dict)
    created: str = ""
    extension_name: str = "azureml"
    configures_extension: bool = True  # spec.extension.mode Configure: it writes the extension's settings
    owns_extension: bool = False  # status.ownsExtension: it set the extension's identity

    def state(self, type_: str) -> str:
        """The status of one of its conditions (Unknown when it has none)."""
        return self.conditions.get(type_, ("Unknown", "", ""))[0]

    @property
    def health(self) -> ComputeHealth:
        identity = self.identity_id.rstrip("/").rsplit("/", 1)[-1] or "the identity"
        return ComputeHealth(self.name, self.conditions, self.subjects, identity)

    @property
    def ready(self) -> bool:
        return self.state(r.READY) == "True"

    @property
    def stalled(self) -> bool:
        return self.state(r.STALLED) == "True"

    @property
    def ready_message(self) -> str:
        _, reason, message = self.conditions.get(r.READY, ("Unknown", "", "it has not been reconciled yet"))
        return f"{reason}: {message}".strip(": ")

    def uses_identity(self, identity_id: str) -> bool:
        return same_id(self.identity_id, identity_id)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _gpus(instance_type: Mapping[str, Any]) -> int:
    """The instance type's nvidia.com/gpu limit (0 when absent or not a whole number)."""
    limits = ((instance_type.get("resources") or {}).get("limits") or {}) if isinstance(instance_type, Mapping) else {}
    try:
        return int(str(limits.get("nvidia.com/gpu", 0)))
    except ValueError:
        return 0


def view_of(name: str, spec: Mapping[str, Any], status: Mapping[str, Any] | None, created: str = "") -> ComputeView:
    """The view of a raw AttachedCompute (as kopf hands it over); missing or malformed fields stay empty."""
    status = status or {}
    workspace = spec.get("workspace") or {}
    cluster = spec.get("cluster") or {}
    compute = spec.get("compute") or {}
    extension = spec.get("extension") or {}
    subscription = _text(workspace.get("subscriptionId"))
    conditions = {
        _text(c.get("type")): (_text(c.get("status")), _text(c.get("reason")), _text(c.get("message")))
        for c in status.get("conditions") or []
        if isinstance(c, Mapping)
    }
    return ComputeView(
        name=name,
        workspace=WorkspaceRef(subscription, _text(workspace.get("resourceGroup")), _text(workspace.get("name"))),
        cluster_id=managed_cluster_id(
            _text(cluster.get("subscriptionId")) or subscription,
            _text(cluster.get("resourceGroup")),
            _text(cluster.get("name")),
        ),
        identity_id=_text((spec.get("identity") or {}).get("resourceId")),
        compute_name=_text(compute.get("name")),
        compute_namespace=_text(compute.get("namespace")) or "default",
        instance_types=tuple(_text(i.get("name")) for i in compute.get("instanceTypes") or () if isinstance(i, dict)),
        gpus={_text(i.get("name")): _gpus(i) for i in compute.get("instanceTypes") or () if isinstance(i, dict)},
        allowed_namespaces=tuple(_text(n) for n in (spec.get("jobs") or {}).get("allowedNamespaces") or ()),
        subjects=tuple(
            subject_of(_text(a.get("namespace")), _text(a.get("name")))
            for a in spec.get("serviceAccounts") or ()
            if isinstance(a, dict)
        ),
        grants=tuple(
            (_text(g.get("scope")).lower(), role_guid(_text(g.get("role"))))
            for g in (spec.get("access") or {}).get("grants") or ()
            if isinstance(g, dict)
        ),
        issuer=status.get("oidcIssuer") or None,
        identity_client_id=(status.get("identity") or {}).get("clientId"),
        conditions=conditions,
        created=created,
        extension_name=_text(extension.get("name")) or "azureml",
        configures_extension=extension.get("mode", "Configure") == "Configure",
        owns_extension=status.get("ownsExtension") is True,
    )


def extension_owner(
    me: str, identity_id: str, created: str, owns: bool, siblings: Sequence[ComputeView], extension: str
) -> ComputeView | None:
    """The AttachedCompute on the same cluster that sets the extension's identity, when it is not `me`.

    One extension serves one identity. Computes sharing `me`'s identity agree with it; among the others that
    configure the same extension, the one that set it (status.ownsExtension) keeps it; otherwise the earliest
    created whose identity is not known to be missing. `me` never yields to one created after it.
    """
    rivals = [
        s
        for s in siblings
        if s.configures_extension and s.extension_name == extension and not s.uses_identity(identity_id)
    ]
    recorded = sorted((s for s in rivals if s.owns_extension), key=lambda s: (s.created, s.name))
    if owns:
        return next((s for s in recorded if (s.created, s.name) < (created, me)), None)
    if recorded:
        return recorded[0]
    earlier = [s for s in rivals if s.state(r.IDENTITY_READY) != "False" and (s.created, s.name) < (created, me)]
    return min(earlier, key=lambda s: (s.created, s.name), default=None)
