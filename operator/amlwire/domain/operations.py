"""The ledger of long-running Azure operations amlwire started and follows without blocking.

An operation (extension install or update, compute attach or detach) is recorded in status when it starts.
Each pass observes where it stands and `follow` decides, purely, what to do: begin one (nothing in flight,
or the last one succeeded), monitor it, retry it (it failed, attempts are left) or give up (it failed as
often as its kind allows, or never finished). A changed spec is the user's "try again": operations that
gave up are forgotten when the generation changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum
from typing import Generic, TypeVar

from amlwire.api.attachedcompute import OperationStatus
from amlwire.domain.conditions import rfc3339

R = TypeVar("R")
LRO_TIMEOUT = 3600.0  # seconds an operation may stay in progress before amlwire stops waiting for it


class Kind(StrEnum):
    EXTENSION_CREATE = "ExtensionCreate"
    EXTENSION_UPDATE = "ExtensionUpdate"
    COMPUTE_ATTACH = "ComputeAttach"
    COMPUTE_DETACH = "ComputeDetach"

    @property
    def subject(self) -> str:
        """What the operation works on: operations on one subject share a step."""
        return "Extension" if self in (Kind.EXTENSION_CREATE, Kind.EXTENSION_UPDATE) else "Compute"

    @property
    def give_up_after(self) -> int:
        """Failed attempts after which amlwire stops and asks for a fix (then a spec change to retry)."""
        return GIVE_UP_AFTER[self]


GIVE_UP_AFTER = {Kind.EXTENSION_CREATE: 3, Kind.EXTENSION_UPDATE: 3, Kind.COMPUTE_ATTACH: 3, Kind.COMPUTE_DETACH: 3}


class Progress(Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Observed:
    """Where an operation stands, as this pass saw it (its status URL, or the resource it works on)."""

    progress: Progress
    error: str | None = None


RUNNING = Observed(Progress.RUNNING)
SUCCEEDED = Observed(Progress.SUCCEEDED)


def failed(error: str | None) -> Observed:
    return Observed(Progress.FAILED, error)


@dataclass(frozen=True)
class Begin:
    """Nothing is in flight (or the last operation succeeded): begin one if the resource needs it."""

    attempt: int = 1


@dataclass(frozen=True)
class Monitor:
    """The operation is still in progress: look again later."""

    operation: OperationStatus


@dataclass(frozen=True)
class Retry:
    """The operation failed and attempts are left: begin it again, counting this attempt."""

    attempt: int
    error: str


@dataclass(frozen=True)
class GiveUp:
    """The operation failed as often as its kind allows, or never finished: someone must look."""

    operation: OperationStatus
    error: str
    timed_out: bool = False


Decision = Begin | Monitor | Retry | GiveUp


def follow(
    operation: OperationStatus | None, observed: Observed | None, now: datetime, timeout: float = LRO_TIMEOUT
) -> Decision:
    """What to do about an operation amlwire recorded, given where it stands now."""
    if operation is None or observed is None:
        return Begin()
    if observed.progress is Progress.RUNNING:
        age = age_of(operation, now)
        if age > timeout:
            return GiveUp(operation, f"it has not finished after {age:.0f}s", timed_out=True)
        return Monitor(operation)
    if observed.progress is Progress.SUCCEEDED:
        return Begin()
    error = observed.error or "no error details"
    if operation.attempt >= Kind(operation.kind).give_up_after:
        return GiveUp(operation, error)
    return Retry(operation.attempt + 1, error)


@dataclass(frozen=True)
class Handling(Generic[R]):
    """What a step does with each of the ledger's decisions about its operation: the step says what to begin and
    what each outcome looks like; the ledger (follow) decides which applies."""

    begin: Callable[[Begin], R]
    monitor: Callable[[Monitor], R]
    retry: Callable[[Retry], R]
    give_up: Callable[[GiveUp], R]


def drive(
    operation: OperationStatus | None, observed: Observed | None, now: datetime, timeout: float, handling: Handling[R]
) -> R:
    """Follow an operation through the ledger and hand its decision to the step's handling of it."""
    decision = follow(operation, observed, now, timeout)
    if isinstance(decision, Monitor):
        return handling.monitor(decision)
    if isinstance(decision, Retry):
        return handling.retry(decision)
    if isinstance(decision, GiveUp):
        return handling.give_up(decision)
    return handling.begin(decision)


def age_of(operation: OperationStatus, now: datetime) -> float:
    started = datetime.fromisoformat(operation.started_at.replace("Z", "+00:00"))
    return (now - started).total_seconds()


# -- the ledger in status.operations ----------------------------------------------------------------
# An operation's `target` is None for the resource the spec names now, else the name of the one it works on.
def find(operations: Sequence[OperationStatus], *kinds: Kind, target: str | None = None) -> OperationStatus | None:
    return next((op for op in operations if op.kind in kinds and op.target == target), None)


def of_subject(operations: Sequence[OperationStatus], subject: str) -> OperationStatus | None:
    return next((op for op in operations if _kind(op) is not None and Kind(op.kind).subject == subject), None)


def started(
    kind: Kind, now: datetime, attempt: int = 1, url: str | None = None, target: str | None = None
) -> OperationStatus:
    return OperationStatus(kind=kind.value, url=url, started_at=rfc3339(now), attempt=attempt, target=target)


def recorded(operations: Sequence[OperationStatus], operation: OperationStatus) -> list[OperationStatus]:
    """The ledger with `operation` in place of any earlier one of its kind on its target."""
    return [*without(operations, Kind(operation.kind), target=operation.target), operation]


def without(operations: Sequence[OperationStatus], *kinds: Kind, target: str | None = None) -> list[OperationStatus]:
    return [op for op in operations if op.kind not in kinds or op.target != target]


def resume(
    operations: Sequence[OperationStatus], generation: int | None, observed_generation: int | None
) -> list[OperationStatus]:
    """The operations to go on following. A changed spec is the user's "try again": those that gave up go."""
    kept = [op for op in operations if _kind(op) is not None]
    if generation is None or generation == observed_generation:
        return kept
    return [op for op in kept if op.attempt < Kind(op.kind).give_up_after]


def _kind(operation: OperationStatus) -> Kind | None:
    try:
        return Kind(operation.kind)
    except ValueError:  # recorded by another version of amlwire: not ours to follow
        return None
