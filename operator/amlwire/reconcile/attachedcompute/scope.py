"""One reconcile pass of one AttachedCompute: what it reads, what it has observed so far, what it produces."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import AttachedComputeSpec, AttachedComputeStatus
from amlwire.domain.azure import ClusterInfo, ExtensionInfo, IdentityInfo
from amlwire.domain.operations import resume
from amlwire.domain.view import ComputeView, Target, target_of
from amlwire.reconcile.common import Event, Timings
from amlwire.reconcile.ports import AzurePort, KubePort

MANAGED_BY = {"app.kubernetes.io/managed-by": "amlwire"}
OWNER_LABEL = "amlwire.io/attached-compute"


@dataclass(frozen=True)
class Neighbours:
    """Other AttachedComputes: those sharing the identity (so nothing is deleted under them), and the
    running jobs on this compute (so it is not detached under them)."""

    federations: frozenset[tuple[str, str]] = frozenset()  # (issuer, subject) others still need
    grants: frozenset[tuple[str, str]] = frozenset()  # (scope lower-case, role GUID) others still need
    siblings: tuple[ComputeView, ...] = ()  # AttachedComputes on the same cluster
    running_jobs: tuple[str, ...] = ()  # namespace/name of AmlJobs running on this compute

    @classmethod
    def among(
        cls, views: list[ComputeView], me: str, identity_id: str, cluster_id: str, running_jobs: tuple[str, ...] = ()
    ) -> Neighbours:
        others = [v for v in views if v.name != me]
        sharing = [v for v in others if v.uses_identity(identity_id)]
        return cls(
            federations=frozenset((v.issuer, s) for v in sharing if v.issuer for s in v.subjects),
            grants=frozenset(g for v in sharing for g in v.grants),
            siblings=tuple(v for v in others if v.cluster_id.lower() == cluster_id.lower()),
            running_jobs=running_jobs,
        )


@dataclass
class Observed:
    """What this pass has read from Azure so far, for the steps after the one that read it."""

    cluster: ClusterInfo | None = None
    identity: IdentityInfo | None = None
    extension: ExtensionInfo | None = None


@dataclass
class Scope:
    """Everything one reconcile of one AttachedCompute reads, decides and produces."""

    name: str
    generation: int | None
    spec: AttachedComputeSpec
    previous: AttachedComputeStatus
    now: datetime
    timings: Timings
    azure: AzurePort
    kube: KubePort
    neighbours: Neighbours = field(default_factory=Neighbours)
    status: AttachedComputeStatus = field(init=False)
    observed: Observed = field(default_factory=Observed)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = copy.deepcopy(self.previous)
        self.status.operations = resume(self.status.operations, self.generation, self.previous.observed_generation)

    @property
    def target(self) -> Target:
        return target_of(self.spec)

    @property
    def cluster(self) -> ClusterInfo:
        assert self.observed.cluster is not None, f"a step that reads the cluster needs {r.CLUSTER_READY}"
        return self.observed.cluster

    @property
    def identity(self) -> IdentityInfo:
        assert self.observed.identity is not None, f"a step that reads the identity needs {r.IDENTITY_READY}"
        return self.observed.identity

    def note(self, reason: str, message: str) -> None:
        self.events.append(Event("Normal", reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.events.append(Event("Warning", reason, message))
