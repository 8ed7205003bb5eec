"""AmlJobs followed the way AML really reports: NotResponding and Paused are not final, listings come in no
particular order and without archived jobs, failures come in several shapes."""

from __future__ import annotations

import uuid

import pytest

from amlwire_devenv.chaos import condition
from amlwire_sandbox.world import STREAM_ACCESS_SHAPES
from tests.conftest import wait_for
from tests.e2e.harness import IDENTITY_PRINCIPAL, STORAGE_ID, WORKSPACE_ID

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
MODEL = {"name": "isaaclab-anymal-latest", "version": "2", "type": "custom_model"}


def job_with(harness, status: str, after: float, seconds: float) -> str:
    name = f"j-{uuid.uuid4().hex[:8]}"
    harness.ctl.add_job_rule(
        {"displayName": f"robotics/{name}"}, interruptions=[{"status": status, "after": after, "seconds": seconds}]
    )
    return harness.apply_job("amljob-validate.yaml", name=name)


@pytest.mark.parametrize("interruption", ["NotResponding", "Paused"])
def test_a_job_that_stops_responding_or_pauses_is_followed_to_its_end(harness, interruption):
    harness.ctl.timing(job={"queuedSeconds": 0.2, "runningSeconds": 0.6})
    harness.wired(job_poll_interval=0.2)
    name = job_with(harness, interruption, after=0.1, seconds=2.0)
    seen = harness.wait_job(name, "Reconciling", "True", interruption)
    assert condition(seen, "Ready")["status"] == "False"
    assert condition(seen, "Stalled")["status"] == "False"
    done = harness.wait_job(name, timeout=30)
    assert done["status"]["amlStatus"] == "Completed"
    assert done["status"]["verdict"] == "Passed"


def test_deleting_a_job_that_stopped_responding_cancels_it(harness):
    harness.ctl.timing(job={"queuedSeconds": 0.2, "runningSeconds": 0.6})
    harness.wired(job_poll_interval=0.2)
    name = job_with(harness, "NotResponding", after=0.1, seconds=3600)
    aml = harness.wait_job(name, "Reconciling", "True", "NotResponding")["status"]["amlJobName"]
    harness.delete_job(name)
    wait_for(
        lambda: (
            harness.ctl.resource(f"{WORKSPACE_ID}/jobs/{aml}")["properties"]["status"]
            in ("CancelRequested", "Canceled")
        ),
        timeout=30,
        what="the AML job canceled",
    )


def test_an_archived_job_still_reaches_its_final_status(harness):
    harness.ctl.timing(job={"queuedSeconds": 1.0, "runningSeconds": 0.5})
    harness.wired(job_poll_interval=0.2)
    name = harness.apply_job("amljob-validate.yaml")
    aml = wait_for(lambda: (harness.job(name).get("status") or {}).get("amlJobName"), timeout=30, what="submitted")
    harness.ctl.patch(f"{WORKSPACE_ID}/jobs/{aml}", {"properties": {"isArchived": True}})  # gone from listings
    assert harness.wait_job(name)["status"]["amlStatus"] == "Completed"


def test_many_jobs_in_shuffled_pages_converge_with_a_bounded_number_of_calls(harness):
    harness.ctl.timing(pageSize=10, job={"queuedSeconds": 1.0, "runningSeconds": 1.0})
    harness.wired(job_poll_interval=0.5)
    names = [harness.apply_job("amljob-command.yaml", name=f"many-{i:02d}") for i in range(40)]
    wait_for(lambda: all((harness.job(n).get("status") or {}).get("amlJobName") for n in names), timeout=60)
    mark = harness.ctl.mark()
    for name in names:
        assert harness.wait_job(name, timeout=60)["status"]["amlStatus"] == "Completed"
    calls = harness.ctl.calls(mark)
    listings = [c for c in calls if c["route"] == "ml.job.list"]
    direct = [c for c in calls if c["route"] == "ml.job" and c["method"] == "GET"]
    polls = (listings[-1]["started"] - listings[0]["started"]) / 0.5 + 2  # the interval only grows (backoff)
    assert len(listings) <= 4 * polls  # at most ceil(40 / 10) pages per poll, never a call per job
    assert len(direct) <= 8  # nothing archived: a direct lookup is rare, never one per job and interval


@pytest.mark.parametrize("shape", STREAM_ACCESS_SHAPES)
def test_every_shape_of_a_storage_failure_gets_the_same_hint(harness, shape):
    harness.sandbox.sandbox.world.rules.stream_access_error = shape
    harness.wired()
    for key, value in harness.ctl.state()["resources"].items():  # the storage role goes, behind amlwire's back
        at_storage = key.lower().startswith(STORAGE_ID.lower() + "/providers/microsoft.authorization/")
        if at_storage and value["properties"]["principalId"] == IDENTITY_PRINCIPAL:
            harness.ctl.delete(key)
    name = harness.apply_job("amljob-validate.yaml", model={**MODEL, "delivery": "Mount"})
    stalled = harness.wait_job(name, "Stalled", "True", "ScriptExecutionStreamAccessAuthentication")
    failure = stalled["status"]["failure"]
    assert failure["code"] == "ScriptExecution.StreamAccess.Authentication"
    assert failure["hint"].startswith("The job could not reach storage: the identity lacks an effective Storage Blob")
    assert "spec.model.delivery: InContainer" in failure["hint"]
