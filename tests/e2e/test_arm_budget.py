"""Inside ARM's request budget: many jobs on a small write bucket are paced, not throttled, and all converge."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from amlwire.adapters.azure.clients import AzureClients
from tests.conftest import wait_for
from tests.e2e.harness import SUB, WORKSPACE_ID

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
JOBS = 60
SIZE, REFILL = 20, 2.0  # writes: a bucket of 20, 2 back per second


def arm(calls: list[dict]) -> list[dict]:
    return [c for c in calls if c["path"].lower().startswith("/subscriptions/")]


def test_sixty_jobs_on_a_small_write_budget_are_paced_and_all_submitted(harness):
    # the operator is told the subscription's budget, as a user on a trial subscription would
    harness.wired(arm_write_budget=f"{SIZE}/{REFILL:g}", job_poll_interval=1.0)
    harness.ctl.arm_limits(writes={"size": SIZE, "refill": REFILL})  # the buckets start full
    mark = harness.ctl.mark()
    names = [harness.apply_job("amljob-command.yaml", name=f"budget-{i}") for i in range(JOBS)]
    wait_for(
        lambda: all(harness.job(n).get("status", {}).get("amlStatus") == "Completed" for n in names),
        timeout=150,
        interval=1.0,
        what=f"{JOBS} jobs Completed",
    )
    calls = arm(harness.ctl.calls(since=mark))
    writes = [c for c in calls if c["method"] in ("PUT", "PATCH", "POST")]
    submissions = sorted(c["time"] for c in writes if c["route"] == "ml.job" and c["status"] < 300)
    assert len(submissions) == JOBS  # one job PUT each, none repeated
    assert len([c for c in writes if c["route"] == "ml.environment.version"]) <= 1  # written once, then named
    throttled = [c for c in calls if c["status"] == 429]
    assert len(throttled) < 0.05 * len(calls), f"{len(throttled)} of {len(calls)} ARM calls answered 429"
    # the bucket allowed SIZE at once and REFILL a second after: the pacing, not luck, kept 429s away
    floor = (JOBS + 1 - SIZE) / REFILL
    assert submissions[-1] - submissions[0] >= 0.8 * floor


def test_a_429_from_azure_holds_the_budget_for_everyone_then_work_resumes(harness):
    harness.wired()
    harness.ctl.arm_limits(writes={"size": 3, "refill": 0.5})  # far below what the operator was told
    mark = harness.ctl.mark()
    names = [harness.apply_job("amljob-command.yaml", name=f"hold-{i}") for i in range(6)]
    wait_for(
        lambda: all(harness.job(n).get("status", {}).get("amlJobName") for n in names),
        timeout=60,
        interval=0.5,
        what="6 jobs submitted",
    )
    calls = arm(harness.ctl.calls(since=mark))
    throttled = [c for c in calls if c["status"] == 429]
    assert throttled, "the budget was meant to run out"
    # after each 429 (Retry-After 2 s at 0.5/s), no write went out before Retry-After had passed
    for refused in throttled:
        too_soon = [
            c for c in calls if c["method"] in ("PUT", "PATCH", "POST") and 0.2 < c["started"] - refused["time"] < 1.8
        ]
        assert not too_soon, f"write sent {too_soon[0]['started'] - refused['time']:.2f}s after a 429"


def test_azure_calls_from_every_thread_at_once_keep_their_connections(harness, caplog):
    """The handler threads and the job poller's updaters call Azure together; each keeps its TLS connection. A
    pool smaller than the threads drops connections and handshakes again (bench/scale.py found 1,000+ per
    1,000 jobs through the bare ARM pipeline, urllib3's 'Connection pool is full' warnings)."""
    settings = harness.settings()
    clients = AzureClients(settings, harness.credential())
    threads = settings.max_workers + settings.job_update_threads
    caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")
    ready = threading.Barrier(threads, timeout=30)

    def read_together(_: int) -> None:
        ready.wait()  # every thread holds a connection at the same moment
        for _ in range(3):
            clients.get(SUB, WORKSPACE_ID)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read_together, range(threads)))
    said = [r.getMessage() for r in caplog.records if r.name == "urllib3.connectionpool"]
    assert [m for m in said if "Connection pool is full" in m] == []
    sandbox = harness.sandbox.base_url.removeprefix("https://")
    opened = [m for m in said if "Starting new HTTPS connection" in m and sandbox in m]
    assert 0 < len(opened) <= threads + 2  # one per thread, and the token's
