"""ARM's request budget, kept by amlwire as a whole instead of discovered one 429 at a time.

ARM throttles with token buckets per subscription, principal and operation type (Learn, "Understand how Azure
Resource Manager throttles requests": reads 250 refilled at 25/s, writes and deletes 200 at 10/s) and reports
what is left in `x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}` on every answer. `ArmPacer`
models those buckets for amlwire's share of them, corrects its model with every header Azure sends, and gives
each request a slot: at once while tokens are left, later (the caller sleeps) when the bucket is empty, so
amlwire sends at the refill rate instead of into an empty bucket. A request that would wait longer than
`max_wait`, or that comes while a 429's Retry-After runs, is refused as AzureThrottled without a call: the
reconcile or poller tries again later instead of holding a thread. Every reconcile, drift timer and job poller
shares one pacer, so a 429 of ARM's subscription budget is everyone's.

A resource provider throttles on its own too: Entra documents per managed identity 0.5 GET/s and 0.25 writes/s.
Such a 429 comes through ARM with ARM's budget left (its headers say so): only requests to that resource are
held (`resource`, the top-level resource of the path), and the rest of the subscription's work goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from amlwire.api.reasons import AZURE_THROTTLED
from amlwire.domain.errors import AzureError

KINDS = ("reads", "writes", "deletes")
DEFAULT_HOLD = 10.0  # seconds, when a 429 names no Retry-After
MAX_WAIT = 30.0  # seconds a request may wait for its slot before the caller is told to come back later
HOLD_GRACE = 1.0  # a 429's hold this close to its end is waited out (the SDK's own retry lands here)
AS_ASKED = "as Azure's Retry-After asked"


def kind_of(method: str) -> str:
    """ARM's operation type: GET/HEAD read, DELETE deletes, PUT/PATCH/POST write."""
    method = method.upper()
    return "reads" if method in ("GET", "HEAD") else "deletes" if method == "DELETE" else "writes"


def _throttled(what: str, wait: float, why: str) -> AzureError:
    return AzureError(
        AZURE_THROTTLED,
        f"{what}; amlwire sends again in {wait:.1f}s ({why})",
        retryable=True,
        retry_after=wait,
        status=429,
    )


@dataclass(frozen=True)
class BucketLimit:
    size: float
    refill: float  # tokens per second


DOCUMENTED = {
    "reads": BucketLimit(250, 25),
    "writes": BucketLimit(200, 10),
    "deletes": BucketLimit(200, 10),
}


@dataclass
class _Bucket:
    limit: BucketLimit
    tokens: float  # below zero: slots already promised to waiting requests
    at: float
    held_until: float = 0.0

    def refill(self, now: float) -> None:
        self.tokens = min(self.limit.size, self.tokens + (now - self.at) * self.limit.refill)
        self.at = now


class ArmPacer:
    """Per (subscription, operation type): amlwire's model of its ARM bucket."""

    def __init__(
        self,
        limits: Mapping[str, BucketLimit] | None = None,
        share: float = 1.0,
        max_hold: float = 300.0,
        max_wait: float = MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.documented = dict(limits or DOCUMENTED)
        self.share = share
        self.limits = {k: BucketLimit(v.size * share, v.refill * share) for k, v in self.documented.items()}
        self.max_hold = max_hold  # never park a budget longer than the operator's own longest backoff
        self.max_wait = max_wait
        self.clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._resource_holds: dict[tuple[str, str], float] = {}  # (resource, kind) -> held until
        self._lock = threading.Lock()

    def _bucket(self, subscription: str, kind: str, now: float) -> _Bucket:
        key = (subscription.lower(), kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            limit = self.limits[kind]
            bucket = self._buckets[key] = _Bucket(limit, limit.size, now)
        bucket.refill(now)
        return bucket

    def reserve(
        self, subscription: str, method: str, action: str, metered: bool = True, resource: str | None = None
    ) -> float:
        """Take a slot for one request: the seconds to wait before sending it (AzureThrottled if too long).

        Unmetered (services other than ARM, whose budgets Azure does not report) only a 429's hold applies; a
        request to a `resource` its provider throttled waits for that hold too."""
        kind = kind_of(method)
        with self._lock:
            now = self.clock()
            own = self._resource_held(resource, kind, now)
            if own > HOLD_GRACE:
                raise _throttled(
                    f"{action}: Azure throttled {kind} of {resource_name(resource)}",
                    own,
                    AS_ASKED,
                )
            bucket = self._bucket(subscription, kind, now)
            held = max(0.0, bucket.held_until - now)
            short = metered and bucket.tokens < 1.0
            wait = max(own, held, (1.0 - bucket.tokens) / bucket.limit.refill if short else 0.0)
            if held > HOLD_GRACE or wait > self.max_wait:
                why = AS_ASKED if held > HOLD_GRACE else f"refill {bucket.limit.refill:g}/s"
                raise _throttled(
                    f"{action}: Azure's budget for {kind} in subscription {subscription} is spent", wait, why
                )
            if metered:
                bucket.tokens -= 1.0
            return wait

    def _resource_held(self, resource: str | None, kind: str, now: float) -> float:
        if resource is None:
            return 0.0
        return max(0.0, self._resource_holds.get((resource.lower(), kind), 0.0) - now)

    def still_held(self, subscription: str, method: str, action: str, resource: str | None = None) -> float:
        """After waiting for its slot: a 429 may have come back meanwhile. Seconds more to wait (its last
        second), or AzureThrottled when the hold is longer."""
        left = self.remaining(subscription, method)
        with self._lock:
            own = self._resource_held(resource, kind_of(method), self.clock())
        if own > HOLD_GRACE:
            what = f"{action}: Azure throttled {kind_of(method)} of {resource_name(resource)} while this request waited"
            raise _throttled(what, own, AS_ASKED)
        if left > HOLD_GRACE:
            what = (
                f"{action}: Azure throttled {kind_of(method)} in subscription {subscription} while this request waited"
            )
            raise _throttled(what, left, AS_ASKED)
        return max(left, own)

    def observe(self, subscription: str, method: str, remaining: int | None) -> None:
        """Azure said how many tokens its bucket has left: amlwire never counts on more than its share of it."""
        if remaining is None:
            return
        kind = kind_of(method)
        with self._lock:
            bucket = self._bucket(subscription, kind, self.clock())
            others = self.documented[kind].size - bucket.limit.size  # left to other tools sharing the principal
            bucket.tokens = min(bucket.tokens, remaining - others)

    def hold(self, subscription: str, method: str, retry_after: float | None, resource: str | None = None) -> None:
        """Azure answered 429: no request of this type goes out before Retry-After; to `resource` only, when its
        provider throttled it (ARM's own budget was not spent)."""
        seconds = min(self.max_hold, retry_after if retry_after is not None else DEFAULT_HOLD)
        with self._lock:
            now = self.clock()
            if resource is not None:
                key = (resource.lower(), kind_of(method))
                self._resource_holds[key] = max(self._resource_holds.get(key, 0.0), now + seconds)
                return
            bucket = self._bucket(subscription, kind_of(method), now)
            bucket.held_until = max(bucket.held_until, now + seconds)
            bucket.tokens = min(bucket.tokens, 0.0)

    def remaining(self, subscription: str, method: str) -> float:
        """Seconds left of a 429's hold."""
        with self._lock:
            now = self.clock()
            return max(0.0, self._bucket(subscription, kind_of(method), now).held_until - now)

    def tokens(self, subscription: str, method: str) -> float:
        with self._lock:
            return self._bucket(subscription, kind_of(method), self.clock()).tokens

    def refill(self, method: str) -> float:
        """amlwire's share of the refill rate of a budget, per second."""
        return self.limits[kind_of(method)].refill


def resource_name(resource: str | None) -> str:
    return (resource or "").rstrip("/").rsplit("/", 1)[-1] or "the resource"
