"""Retry-After honoured across the whole operator, not just by the call that was throttled.

ARM throttles per subscription and principal, with separate budgets for reads and writes. After a 429, any
reconcile, timer or job poller that would call the same budget before Retry-After has passed is answered
here, without a request, as throttled for the time that is left: one object's 429 is everyone's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from amlwire.api.reasons import AZURE_THROTTLED
from amlwire.domain.errors import AzureError

WRITES = frozenset({"PUT", "PATCH", "POST", "DELETE"})
DEFAULT_HOLD = 10.0  # seconds, when a 429 names no Retry-After


def budget(subscription: str, method: str) -> tuple[str, str]:
    return subscription.lower(), "writes" if method.upper() in WRITES else "reads"


class ThrottleGate:
    """Per (subscription, reads|writes): the monotonic time before which no call goes out."""

    def __init__(self, max_hold: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_hold = max_hold  # never park a budget longer than the operator's own longest backoff
        self._clock = clock
        self._until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def hold(self, subscription: str, method: str, retry_after: float | None) -> None:
        """Azure answered 429: keep this budget closed for Retry-After."""
        seconds = min(self._max_hold, retry_after if retry_after is not None else DEFAULT_HOLD)
        key = budget(subscription, method)
        with self._lock:
            self._until[key] = max(self._until.get(key, 0.0), self._clock() + seconds)

    def remaining(self, subscription: str, method: str) -> float:
        with self._lock:
            return max(0.0, self._until.get(budget(subscription, method), 0.0) - self._clock())

    def check(self, subscription: str, method: str, action: str) -> None:
        """Raise AzureThrottled instead of calling while the budget is closed."""
        left = self.remaining(subscription, method)
        if left > 0:
            _, kind = budget(subscription, method)
            raise AzureError(
                AZURE_THROTTLED,
                f"{action}: Azure is throttling {kind} in subscription {subscription}; amlwire holds them "
                f"for {left:.1f}s more, as Azure's Retry-After asked",
                retryable=True,
                retry_after=left,
                status=429,
            )
