"""ARM's request budget: token buckets per subscription, principal and operation type (rule arm.throttling).

Learn, "Understand how Azure Resource Manager throttles requests" (token bucket algorithm, 2024): reads 250
tokens refilled at 25/s, writes and deletes 200 at 10/s, per subscription, per security principal and per
operation type; a global subscription bucket at 15 times a principal's for all principals together. Every
answer reports what is left in `x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}` (and the global
bucket's `...-global-...`); a request into an empty bucket is answered 429 with Retry-After and costs nothing.
Only calls through ARM (`/subscriptions/...`) count: Entra, run history and MLflow are other services.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from amlwire_sandbox.world import ArmLimits

KINDS = {"GET": "reads", "HEAD": "reads", "DELETE": "deletes"}  # PUT, PATCH and POST are writes


def kind_of(method: str) -> str:
    return KINDS.get(method.upper(), "writes")


def counts(path: str) -> bool:
    return path.lower().startswith("/subscriptions/")


@dataclass
class Bucket:
    size: float
    refill: float  # tokens per second
    tokens: float
    at: float

    def level(self, now: float) -> float:
        self.tokens = min(self.size, self.tokens + (now - self.at) * self.refill)
        self.at = now
        return self.tokens

    def wait(self) -> float:
        """Seconds until one token is there (call after level)."""
        return max(0.0, (1.0 - self.tokens) / self.refill)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    headers: dict[str, str]
    retry_after: float = 0.0
    message: str = ""


MSI_IDENTITY = "/providers/microsoft.managedidentity/userassignedidentities/"


def identity_of(path: str) -> str | None:
    """The identity resource a request is about (itself or its federated credentials), lower-case."""
    lowered = path.lower()
    at = lowered.find(MSI_IDENTITY)
    if at < 0:
        return None
    rest = lowered[at + len(MSI_IDENTITY) :].split("/", 1)[0]
    return lowered[: at + len(MSI_IDENTITY)] + rest if rest else None


class ArmBudget:
    """The buckets of one sandbox. Callers hold the state's lock."""

    def __init__(self, limits: ArmLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[tuple[str, str, str], Bucket] = {}

    def _bucket(self, subscription: str, principal: str, kind: str, now: float) -> Bucket:
        key = (subscription.lower(), principal, kind)
        if key not in self._buckets:
            limit = getattr(self.limits, kind)
            factor = self.limits.global_factor if principal == "*" else 1.0
            size, refill = limit.size * factor, limit.refill * factor
            self._buckets[key] = Bucket(size, refill, size, now)
        return self._buckets[key]

    def take(self, method: str, path: str, principal: str) -> Verdict:  # rule: arm.throttling
        if not self.limits.enabled or not counts(path):
            return Verdict(True, {})
        subscription = path.split("/")[2]
        kind = kind_of(method)
        now = self.clock()
        own = self._bucket(subscription, principal or "anonymous", kind, now)
        every = self._bucket(subscription, "*", kind, now)
        if own.level(now) < 1 or every.level(now) < 1:
            wait = max(own.wait(), every.wait())
            singular = kind.removesuffix("s")
            message = (
                f"Number of '{singular}' requests for subscription '{subscription}' actor '{principal}' exceeded. "
                f"Please try again after '{math.ceil(wait)}' seconds after additional tokens are available. "
                "Refer to https://aka.ms/arm-throttling"
            )
            return Verdict(False, self._headers(kind, own, every), wait, message)
        own.tokens -= 1
        every.tokens -= 1
        return Verdict(True, self._headers(kind, own, every))

    def take_identity(self, method: str, path: str) -> float | None:  # rule: msi.identity-throttling
        """The managed-identity provider's own bucket per identity (after ARM let the request through): seconds
        to wait when it is empty, None when the request goes on. DELETEs count as writes."""
        limits = self.limits.identity
        identity = identity_of(path)
        if not limits.enabled or identity is None:
            return None
        kind = "reads" if kind_of(method) == "reads" else "writes"
        now = self.clock()
        key = (identity, "msi", kind)
        if key not in self._buckets:
            limit = getattr(limits, kind)
            self._buckets[key] = Bucket(limit.size, limit.refill, limit.size, now)
        bucket = self._buckets[key]
        if bucket.level(now) < 1:
            return bucket.wait()
        bucket.tokens -= 1
        return None

    @staticmethod
    def _headers(kind: str, own: Bucket, every: Bucket) -> dict[str, str]:
        return {
            f"x-ms-ratelimit-remaining-subscription-{kind}": str(int(own.tokens)),
            f"x-ms-ratelimit-remaining-subscription-global-{kind}": str(int(every.tokens)),
        }
