"""The throttle gate: one 429 closes its subscription's read or write budget for Retry-After (pure, fake clock)."""

from __future__ import annotations

import pytest

from amlwire.adapters.azure.throttle import DEFAULT_HOLD, ThrottleGate
from amlwire.domain.errors import AzureError

MAX_HOLD = 60.0
SUB, OTHER = "6F1C2B1E-5c1a-4f5e-9a51-1b2c3d4e5f60", "0b7e6a52-33c4-4d8e-9f10-2a3b4c5d6e7f"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CASES = [
    # (case, throttled (subscription, method, Retry-After), asked (subscription, method), after seconds, left)
    ("same budget, at once", (SUB, "PUT", 2.0), (SUB, "PUT"), 0.0, 2.0),
    ("another write method shares the budget", (SUB, "PUT", 2.0), (SUB, "DELETE"), 0.5, 1.5),
    ("subscription case does not matter", (SUB, "PUT", 2.0), (SUB.lower(), "PATCH"), 0.0, 2.0),
    ("reads stay open after a write 429", (SUB, "PUT", 2.0), (SUB, "GET"), 0.0, 0.0),
    ("writes stay open after a read 429", (SUB, "GET", 2.0), (SUB, "POST"), 0.0, 0.0),
    ("other subscriptions stay open", (SUB, "GET", 2.0), (OTHER, "GET"), 0.0, 0.0),
    ("open again once Retry-After has passed", (SUB, "GET", 2.0), (SUB, "GET"), 2.0, 0.0),
    ("no Retry-After: the default hold", (SUB, "GET", None), (SUB, "GET"), 0.0, DEFAULT_HOLD),
    ("an absurd Retry-After is capped", (SUB, "GET", 86400.0), (SUB, "GET"), 0.0, MAX_HOLD),
]


@pytest.mark.parametrize(("case", "throttled", "asked", "after", "left"), CASES, ids=[c[0] for c in CASES])
def test_remaining_hold(case, throttled, asked, after, left):
    clock = Clock()
    gate = ThrottleGate(MAX_HOLD, clock)
    gate.hold(*throttled)
    clock.now += after
    assert gate.remaining(*asked) == pytest.approx(left)


def test_a_shorter_retry_after_never_shortens_a_longer_hold():
    clock = Clock()
    gate = ThrottleGate(MAX_HOLD, clock)
    gate.hold(SUB, "PUT", 5.0)
    gate.hold(SUB, "PUT", 1.0)
    assert gate.remaining(SUB, "PUT") == pytest.approx(5.0)


def test_check_refuses_with_the_time_left_and_names_the_action():
    clock = Clock()
    gate = ThrottleGate(MAX_HOLD, clock)
    gate.hold(SUB, "PUT", 3.0)
    clock.now += 1.0
    with pytest.raises(AzureError) as refused:
        gate.check(SUB, "PUT", "assign role on /x")
    assert refused.value.reason == "AzureThrottled"
    assert refused.value.retryable
    assert refused.value.retry_after == pytest.approx(2.0)
    assert refused.value.message.startswith("assign role on /x: Azure is throttling writes")
    gate.check(SUB, "GET", "get identity")  # reads are another budget: no exception
