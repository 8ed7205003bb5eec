"""The sandbox's state: ARM resources by ID, long-running operations, faults, the call log.

Everything time-dependent (operations, propagation, jobs) is computed from timestamps when read,
so no background task is needed and a test can reason about it. All access holds `lock`.
"""

from __future__ import annotations

import copy
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from amlwire_sandbox import ids
from amlwire_sandbox.budget import ArmBudget
from amlwire_sandbox.world import World

AUDIENCE = "api://AzureADTokenExchange"


class ArmError(Exception):
    """An ARM error response: status and {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def not_found(kind: str, resource_id: str) -> ArmError:
    return ArmError(404, "ResourceNotFound", f"The Resource '{kind}' under '{resource_id}' was not found.")


def iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1e6):06d}Z"


def key(resource_id: str) -> str:
    return resource_id.rstrip("/").lower()


@dataclass
class Resource:
    id: str
    type: str
    body: dict[str, Any]
    created: float
    updated: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.id.rsplit("/", 1)[-1]

    @property
    def properties(self) -> dict[str, Any]:
        return self.body.setdefault("properties", {})


@dataclass
class Operation:
    """A long-running operation: InProgress until `done_at`, then `outcome`; `finish` applies its effect."""

    id: str
    resource_id: str
    done_at: float
    outcome: str
    kind: str
    error: dict[str, str] | None = None
    finished: bool = False
    started: float = 0.0

    def status(self, now: float) -> str:
        return "InProgress" if now < self.done_at else self.outcome


@dataclass
class Fault:
    """An injected failure on matching calls: by count (`remaining`) or `probability`."""

    id: str
    route: str
    method: str | None
    status: int | None
    code: str
    message: str
    retry_after: float | None
    latency: float
    lro_failed: bool
    remaining: int | None
    probability: float | None
    draws: random.Random | None = None  # its own seeded sequence, so a campaign replays whatever else ran

    def matches(self, method: str, route: str) -> bool:
        return (self.route == "*" or self.route == route) and (self.method is None or self.method == method)


@dataclass
class Call:
    seq: int
    time: float
    method: str
    route: str
    path: str
    status: int
    caller: str | None
    fault: str | None = None  # the injected fault this call met: "429", "500", "latency 0.4s", "lroFailed"
    started: float | None = None  # when the request arrived (`time` is when it was answered)


class State:
    """All of the sandbox's mutable state. Methods assume `lock` is held by the caller."""

    def __init__(self, world: World, base_url: str = "", seed: int = 0) -> None:
        self.lock = threading.RLock()
        self.world = world
        self.base_url = base_url
        self.random = random.Random(seed)
        self.seed = seed
        self.resources: dict[str, Resource] = {}
        self.operations: dict[str, Operation] = {}
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        self.issued_tokens: list[str] = []  # every access token handed out, for leak tests to look for
        self.exchanges: list[dict[str, Any]] = []  # each assertion Entra accepted: issuer, subject, key id
        self.fic_writes_until: dict[str, float] = {}
        self.job_rules: list[dict[str, Any]] = []
        self.blobs: dict[
            str, dict[str, tuple[bytes, float]]
        ] = {}  # "<account id>/<container>" -> name -> (bytes, written)
        self.timing = copy.deepcopy(world.timing)
        self.budget = ArmBudget(copy.deepcopy(world.arm_limits))

    # -- time and clock -------------------------------------------------------------------------
    def now(self) -> float:
        return time.time()

    # -- resources ------------------------------------------------------------------------------
    def get(self, resource_id: str) -> Resource | None:
        return self.resources.get(key(resource_id))

    def require(self, resource_id: str, kind: str) -> Resource:
        found = self.get(resource_id)
        if found is None:
            raise not_found(kind, resource_id)
        return found

    def put(self, resource_id: str, type_: str, body: dict[str, Any], **extra: Any) -> Resource:
        now = self.now()
        existing = self.get(resource_id)
        body = {**body, "id": resource_id, "name": resource_id.rsplit("/", 1)[-1], "type": type_}
        if type_ == ids.EXTENSION:  # rule: ext.error-info (however the world made it)
            body["properties"] = {"errorInfo": None, "statuses": [], **(body.get("properties") or {})}
        if existing is not None:
            existing.body = body
            existing.updated = now
            existing.extra.update(extra)
            return existing
        resource = Resource(resource_id, type_, body, now, now, dict(extra))
        self.resources[key(resource_id)] = resource
        return resource

    def delete(self, resource_id: str) -> Resource | None:
        return self.resources.pop(key(resource_id), None)

    def children(self, parent_id: str, type_: str) -> list[Resource]:
        prefix = key(parent_id) + "/"
        return [
            r
            for k, r in self.resources.items()
            if k.startswith(prefix)
            and r.type.lower() == type_.lower()
            and "/" not in k[len(prefix) :].split("/", 1)[-1]
        ]

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.type.lower() == type_.lower()]

    # -- long-running operations ----------------------------------------------------------------
    def start_operation(self, resource_id: str, kind: str, seconds: float | None = None) -> Operation:
        duration = self.timing.lro_seconds if seconds is None else seconds
        outcome = self.timing.lro_outcome
        now = self.now()
        operation = Operation(uuid.uuid4().hex, resource_id, now + duration, outcome, kind, started=now)
        if outcome == "Failed":
            operation.error = {
                "code": "ExtensionOperationFailed" if "extension" in kind.lower() else "OperationFailed",
                "message": f"The {kind} operation failed (injected by the sandbox world).",
            }
        self.operations[operation.id] = operation
        return operation

    def operation_url(self, operation: Operation) -> str:
        """Under the resource, as the Extensions spec has it (.../operations/{id}): an ARM path, so polling it is
        metered and authorised like any read of the resource (rule arm.lro)."""
        return f"{self.base_url}{operation.resource_id}/operationStatuses/{operation.id}?api-version=2023-01-01"

    def operation_result_url(self, operation: Operation) -> str:
        return f"{self.base_url}{operation.resource_id}/operationResults/{operation.id}?api-version=2023-01-01"

    def pending_operation(self, resource_id: str) -> Operation | None:
        now = self.now()
        return next(
            (
                o
                for o in self.operations.values()
                if key(o.resource_id) == key(resource_id) and not o.finished and o.status(now) == "InProgress"
            ),
            None,
        )

    # -- faults and the call log ----------------------------------------------------------------
    def add_fault(self, spec: dict[str, Any]) -> Fault:
        fault = Fault(
            id=uuid.uuid4().hex[:8],
            route=spec.get("route", "*"),
            method=spec.get("method"),
            status=spec.get("status"),
            code=spec.get("code") or _default_fault_code(spec.get("status")),
            message=spec.get("message", "Injected by the amlwire sandbox."),
            retry_after=spec.get("retryAfter"),
            latency=float(spec.get("latency", 0.0)),
            lro_failed=bool(spec.get("lroFailed", False)),
            remaining=spec.get("count"),
            probability=spec.get("probability"),
            draws=random.Random(spec["seed"]) if spec.get("seed") is not None else None,
        )
        self.faults.append(fault)
        return fault

    def draw_fault(self, method: str, route: str) -> Fault | None:
        for fault in self.faults:
            if not fault.matches(method, route):
                continue
            if fault.remaining is not None:
                if fault.remaining <= 0:
                    continue
                fault.remaining -= 1
                return fault
            if fault.probability is not None and (fault.draws or self.random).random() < fault.probability:
                return fault
        return None

    def record(
        self,
        method: str,
        route: str,
        path: str,
        status: int,
        caller: str | None,
        fault: str | None = None,
        started: float | None = None,
    ) -> None:
        now = self.now()
        self.calls.append(Call(len(self.calls), now, method, route, path, status, caller, fault, started or now))

    def counts(self, since: int = 0) -> Counter[str]:
        return Counter(f"{c.method} {c.route}" for c in self.calls[since:])

    def snapshot(self) -> dict[str, Any]:
        return {
            "resources": {r.id: copy.deepcopy(r.body) for r in self.resources.values()},
            "operations": {
                o.id: {"resourceId": o.resource_id, "kind": o.kind, "status": o.status(self.now())}
                for o in self.operations.values()
            },
            "blobs": {container: sorted(stored) for container, stored in self.blobs.items()},
        }


def _default_fault_code(status: int | None) -> str:
    return {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}.get(
        status or 0, "InjectedFault"
    )
