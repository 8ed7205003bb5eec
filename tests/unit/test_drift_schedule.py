"""Drift checks spread over their interval instead of all computes reading Azure in the same second."""

from __future__ import annotations

from amlwire.reconcile.common import DriftSchedule


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_computes_that_start_together_are_checked_spread_over_the_interval():
    clock = Clock()
    schedule = DriftSchedule(600.0, clock)
    uids = [f"uid-{i}" for i in range(200)]
    per_minute = [0] * 10
    for _ in range(600):
        clock.now += 1.0
        for uid in uids:
            if schedule.due(uid):
                per_minute[int((clock.now - 500.0 - 1) // 60)] += 1
    assert sum(per_minute) == 200  # each checked once in the first interval
    assert max(per_minute) <= 40  # a tenth of the interval holds about a tenth of them (20), never the lot


def test_a_check_is_due_again_one_interval_later_and_forget_drops_the_schedule():
    clock = Clock()
    schedule = DriftSchedule(60.0, clock)
    clock.now += schedule.phase("a")
    assert schedule.due("a")
    assert not schedule.due("a")
    clock.now += 59.0
    assert not schedule.due("a")
    clock.now += 1.0
    assert schedule.due("a")
    schedule.forget("a")
    assert schedule.due("a")  # no schedule: its first slot (start + phase) has long passed


def test_a_check_that_left_work_in_progress_is_due_again_after_its_delay_not_an_interval():
    clock = Clock()
    schedule = DriftSchedule(600.0, clock)
    clock.now += schedule.phase("a")
    assert schedule.due("a")
    schedule.soon("a", 1.5)  # it re-created a credential Entra honours within a second or so
    clock.now += 1.0
    assert not schedule.due("a")
    clock.now += 0.5
    assert schedule.due("a")
    assert not schedule.due("a")  # and then one interval on, as usual
    schedule.soon("a", 900.0)  # never later than the interval already scheduled
    clock.now += 600.0
    assert schedule.due("a")


def test_a_handler_retrying_on_its_own_postpones_the_drift_check():
    clock = Clock()
    schedule = DriftSchedule(60.0, clock)
    clock.now += schedule.phase("a")
    schedule.postpone("a", 5.0)  # kopf retries the handler in 5 s: the timer must not work on it as well
    clock.now += 5.0
    assert not schedule.due("a")
    clock.now += 1.0
    assert schedule.due("a")
