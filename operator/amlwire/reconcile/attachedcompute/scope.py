"""One reconcile pass of one AttachedCompute: what it reads, what it has observed so far, what it produces."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import AttachedComputeSpec, AttachedComputeStatus
from amlwire.domain.azure import ClusterInfo, ExtensionInfo, IdentityInfo, WorkspaceInfo, same_id
from amlwire.domain.conditions import StepResult, blocked
from amlwire.domain.errors import AzureError
from amlwire.domain.operations import resume
from amlwire.domain.view import ComputeView, Target, target_of
from amlwire.reconcile.ports import KubePort
from amlwire.reconcile.runner import Fact, Provided
from amlwire.reconcile.scope import ObjectScope

MANAGED_BY = {"app.kubernetes.io/managed-by": "amlwire"}
OWNER_LABEL = "amlwire.io/attached-compute"
DETACH_UNDER_JOBS = "amlwire.io/detach-under-running-jobs"
RECONCILE_REQUESTED_AT = "amlwire.io/reconcile-requested-at"


@dataclass(frozen=True)
class Neighbours:
    """What the rest of the cluster needs of this AttachedCompute's Azure side: the other AttachedComputes
    (an identity they share keeps what they use; a cluster they share has one extension identity), and the
    AmlJobs running on this compute (it is not detached under them without saying so)."""

    others: tuple[ComputeView, ...] = ()
    running_jobs: tuple[str, ...] = ()  # namespace/name of AmlJobs running on this compute

    @classmethod
    def among(cls, views: Iterable[ComputeView], me: str, running_jobs: Iterable[str] = ()) -> Neighbours:
        return cls(tuple(v for v in views if v.name != me), tuple(sorted(running_jobs)))

    def sharing(self, identity_id: str) -> list[ComputeView]:
        return [v for v in self.others if v.uses_identity(identity_id)]

    def federations(self, identity_id: str) -> frozenset[tuple[str, str]]:
        """(issuer, subject) pairs others using the identity still need federated."""
        return frozenset((v.issuer, s) for v in self.sharing(identity_id) if v.issuer for s in v.subjects)

    def grants(self, identity_id: str) -> frozenset[tuple[str, str]]:
        """(scope lower-case, role GUID) pairs others using the identity still need."""
        return frozenset(g for v in self.sharing(identity_id) for g in v.grants)

    def siblings(self, cluster_id: str) -> list[ComputeView]:
        """The other AttachedComputes on the same cluster."""
        return [v for v in self.others if v.cluster_id.lower() == cluster_id.lower()]


@dataclass
class Observed:
    """What this pass has read from Azure so far, for the steps after the one that read it."""

    cluster: ClusterInfo | None = None
    identity: IdentityInfo | None = None
    extension: ExtensionInfo | None = None
    workspace: WorkspaceInfo | None = None


@dataclass(kw_only=True)
class Scope(ObjectScope[AttachedComputeSpec, AttachedComputeStatus]):
    """Everything one reconcile of one AttachedCompute reads, decides and produces."""

    kube: KubePort
    neighbours: Neighbours = field(default_factory=Neighbours)
    created: str = ""  # metadata.creationTimestamp: who came first on a shared cluster
    detach_under_jobs: bool = False  # annotation amlwire.io/detach-under-running-jobs: "true"
    requested_at: str | None = None  # annotation amlwire.io/reconcile-requested-at
    observed: Observed = field(default_factory=Observed)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.status.operations = resume(self.status.operations, self.generation, self.previous.observed_generation)

    @property
    def target(self) -> Target:
        held = self.held_identity
        return target_of(self.spec) if held is None else replace(target_of(self.spec), identity_id=held)

    @property
    def held_identity(self) -> str | None:
        """The identity the compute is wired for, while spec.identity has changed and AmlJobs run on it: the jobs'
        data-capability sidecar reads and writes storage as that identity to their end, so its credentials,
        roles, extension settings and attach all stay until they end (or the user overrides)."""
        previous = self.previous.identity.resource_id if self.previous.identity else None
        if not previous or same_id(previous, self.spec.identity.resource_id):
            return None
        return previous if self.neighbours.running_jobs and not self.detach_under_jobs else None

    @property
    def former_identity(self) -> str | None:
        """The identity the previous status was about, when spec.identity has changed since."""
        previous = self.previous.identity.resource_id if self.previous.identity else None
        return previous if previous and not same_id(previous, self.target.identity_id) else None

    def workspace_info(self) -> WorkspaceInfo:
        """The workspace as Azure reports it, read once per pass whichever step asks first."""
        if self.observed.workspace is None:
            self.observed.workspace = self.azure.get_workspace(self.target.workspace)
        return self.observed.workspace

    def blocked(self, condition: str, reason: str, message: str) -> StepResult:
        """Someone must act: the condition says what, and amlwire looks again after the recheck delay."""
        return blocked(condition, reason, message, self.timings.blocked_recheck)

    def denied_or_missing(self, condition: str, error: AzureError, field: str) -> StepResult:
        """Azure answers 403 both for a resource amlwire may not read and for one that does not exist: the
        condition names the role to grant and the spec field to check."""
        if error.reason != r.AZURE_PERMISSION_DENIED:
            raise error
        return self.blocked(condition, error.reason, error.message.replace("check the spec names it", f"check {field}"))


# The extension is installed (its settings may still be changing): enough for the attach and the instance types.
EXTENSION_INSTALLED = Provided("ExtensionInstalled", r.EXTENSION_READY)

# What the cluster and identity steps read, for the steps that declare they need it (runner.Fact).
CLUSTER: Fact[Scope, ClusterInfo] = Fact(r.CLUSTER_READY, lambda scope: scope.observed.cluster)
IDENTITY: Fact[Scope, IdentityInfo] = Fact(r.IDENTITY_READY, lambda scope: scope.observed.identity)
