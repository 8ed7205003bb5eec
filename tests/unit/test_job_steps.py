"""Each AmlJob step, the job poller and deletion on fakes of the ports: given the compute, AML and the previous
status, the conditions, events and calls."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from amlwire.api import reasons as r
from amlwire.api.amljob import AmlJobSpec, AmlJobStatus
from amlwire.config import Settings
from amlwire.domain.conditions import Outcome, StepResult
from amlwire.domain.errors import KubeError
from amlwire.domain.jobs import JobDetails, JobSnapshot, aml_job_name
from amlwire.domain.view import ComputeView, view_of
from amlwire.handlers.amljob import poller_update
from amlwire.reconcile.amljob import JobScope, cancel_job, reconcile_job
from amlwire.reconcile.amljob.follow import follow_the_job
from amlwire.reconcile.amljob.submit import submit_the_job
from amlwire.reconcile.common import Timings
from amlwire.reconcile.poller import BACKOFF, WRITE_GRACE, FollowedJob, JobPoller, JobWatch, NotShownYet
from amlwire.reconcile.runner import Step, guard
from amlwire.reconcile.services import Services
from tests.conftest import example, table
from tests.fakes import WORKSPACE, FakeAzure, FakeKube, at, rejected, throttled

UID = "0b9c8d7e-1111-2222-3333-444455556666"
STREAM = "ScriptExecution.StreamAccess.Authentication"
NAME = aml_job_name("anymal-validate-7", UID)
TIMINGS = Timings(retry_delay=1, max_retry_delay=30, lro_poll_delay=2, blocked_recheck=60)


def compute(ready: str = "True", stalled: str = "False", **spec_changes: Any) -> ComputeView:
    raw = example("attachedcompute.yaml", **spec_changes)
    status = {
        "conditions": [
            {
                "type": "Ready",
                "status": ready,
                "reason": "Ready" if ready == "True" else "AzureThrottled",
                "message": "",
            },
            {"type": "Stalled", "status": stalled, "reason": "NotStalled", "message": ""},
        ],
        "identity": {"clientId": "client"},
    }
    return view_of("robotics-gpu", raw, status)


def with_instance_types(*types: dict[str, Any]) -> ComputeView:
    return compute(compute={**example("attachedcompute.yaml")["compute"], "instanceTypes": list(types)})


def spec(name: str = "amljob-validate.yaml", **changes: Any) -> AmlJobSpec:
    return AmlJobSpec.model_validate(example(name, **changes))


def make(
    azure: FakeAzure | None = None,
    view: ComputeView | None = None,
    previous: AmlJobStatus | None = None,
    watch: JobWatch | None = None,
    namespace: str = "robotics",
    job: AmlJobSpec | None = None,
    no_compute: bool = False,
) -> JobScope:
    return JobScope(
        namespace=namespace,
        name="anymal-validate-7",
        uid=UID,
        generation=1,
        spec=job or spec(),
        previous=previous or AmlJobStatus(),
        now=at(),
        timings=TIMINGS,
        azure=azure or models(FakeAzure()),
        watch=watch or JobWatch(),
        compute=None if no_compute else (view or compute()),
    )


def models(azure: FakeAzure) -> FakeAzure:
    azure.models.add(("isaaclab-anymal-latest", "2"))
    return azure


def run(step: Step[JobScope], scope: JobScope) -> StepResult:
    return guard(step.condition, lambda: step.run(scope), scope.timings, scope.events)


def submitted(status: str = "Running", **fields: Any) -> AmlJobStatus:
    return AmlJobStatus(aml_job_name=NAME, workspace=WORKSPACE.id, aml_status=status, **fields)


# -- Submitted ----------------------------------------------------------------------------------------------
ADMISSION_CASES = [
    # (case, scope changes, outcome, reason, says)
    ("no such compute", {"no_compute": True}, Outcome.BLOCKED, r.COMPUTE_NOT_FOUND, "delete and recreate"),
    (
        "namespace not allowed",
        {"namespace": "team-x"},
        Outcome.BLOCKED,
        r.NAMESPACE_NOT_ALLOWED,
        "spec.jobs.allowedNamespaces",
    ),
    (
        "unknown instance type",
        {"job": spec(instanceType="gpu-8")},
        Outcome.BLOCKED,
        r.INSTANCE_TYPE_NOT_FOUND,
        "(gpu-1)",
    ),
    ("compute stalled", {"view": compute("False", "True")}, Outcome.BLOCKED, r.COMPUTE_NOT_READY, "is not Ready"),
    (
        "an IsaacLab template on an instance type without a GPU",
        {
            "view": with_instance_types(
                {"name": "gpu-1", "resources": {"limits": {"cpu": "8", "memory": "64Gi"}}},
                {"name": "gpu-2", "resources": {"limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 2}}},
            )
        },
        Outcome.BLOCKED,
        r.INSTANCE_TYPE_WITHOUT_GPU,
        "has no nvidia.com/gpu limit, and Isaac Sim cannot run without a GPU; delete and recreate this AmlJob with "
        "one of gpu-2",
    ),
    (
        "InContainer delivery whose pods run as an account the compute does not federate",
        {
            "job": spec(model={"name": "isaaclab-anymal-latest", "version": "2", "delivery": "InContainer"}),
            "view": compute(serviceAccounts=[{"namespace": "azureml", "name": "default"}]),
        },
        Outcome.BLOCKED,
        r.JOB_ACCOUNT_NOT_FEDERATED,
        "adds {namespace: azureml-jobs, name: default} to its spec.serviceAccounts",
    ),
    (
        "compute throttled, not stalled",
        {"view": compute("False", "False")},
        Outcome.PROGRESSING,
        r.COMPUTE_NOT_READY,
        "is not Ready",
    ),
]


@table(("case", "changes", "outcome", "reason", "says"), ADMISSION_CASES)
def test_admission(case, changes, outcome, reason, says):
    azure = models(FakeAzure())
    result = run(submit_the_job, make(azure, **changes))
    assert (result.outcome, result.reason) == (outcome, reason)
    assert says in result.message
    assert azure.writes() == []


def test_a_compute_that_is_only_reconciling_keeps_the_job_reconciling_not_stalled():
    result = reconcile_job(make(view=compute("False", "False")))
    summary = {c.type: c.status for c in result.status.conditions}
    assert (summary["Reconciling"], summary["Stalled"]) == ("True", "False")


def test_a_job_is_submitted_once_with_the_name_derived_from_its_uid():
    azure = models(FakeAzure())
    scope = make(azure)
    result = run(submit_the_job, scope)
    assert result.reason == r.SUBMITTED_REASON
    assert (scope.status.aml_job_name, scope.status.workspace) == (NAME, WORKSPACE.id)
    assert [e.reason for e in scope.events] == [r.SUBMITTED_REASON]
    run(submit_the_job, make(azure, previous=scope.status))
    assert azure.count("submit_job") == 1


def test_an_existing_aml_job_is_adopted_not_submitted_again():
    azure = models(FakeAzure())
    azure.jobs[(WORKSPACE.id.lower(), NAME)] = JobSnapshot(NAME, "Running")
    scope = make(azure)
    run(submit_the_job, scope)
    assert azure.count("submit_job") == 0
    assert [e.reason for e in scope.events] == [r.ADOPTED]


def test_a_missing_model_is_named_and_rechecked_without_writing():
    azure = FakeAzure()
    scope = make(azure)
    result = run(submit_the_job, scope)
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.MODEL_NOT_FOUND)
    assert result.message.startswith("spec.model: model isaaclab-anymal-latest version 2 is not registered")
    status = reconcile_job(make(azure)).status
    for _ in range(3):
        status = reconcile_job(make(azure, previous=status)).status
    assert azure.count("submit_job") == 2  # a first try each time, then none while the model is missing
    models(azure)
    reconcile_job(make(azure, previous=status))
    assert azure.count("submit_job") == 3


def test_a_rejected_job_is_stalled_with_amls_words_and_not_retried():
    azure = models(FakeAzure())
    azure.fail("submit_job", rejected("Invalid command: ${{inputs.lr}} is not defined"))
    result = reconcile_job(make(azure))
    stalled = next(c for c in result.status.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason) == ("True", r.SUBMISSION_REJECTED)
    assert "${{inputs.lr}}" in stalled.message
    assert result.requeue_after is None


def test_throttling_at_submission_is_retried_not_stalled():
    azure = models(FakeAzure())
    azure.fail("submit_job", throttled(4))
    result = reconcile_job(make(azure))
    conditions = {c.type: (c.status, c.reason) for c in result.status.conditions}
    assert conditions["Submitted"] == ("Unknown", r.AZURE_THROTTLED)
    assert conditions["Stalled"][0] == "False"
    assert result.requeue_after == 4


# -- Finished -----------------------------------------------------------------------------------------------
def polled(watch: JobWatch, status: str) -> JobWatch:
    """The watch as the poller leaves it after a listing that showed the job in `status`."""
    watch.follow(FollowedJob("robotics", "anymal-validate-7", UID, NAME, WORKSPACE.id), JobSnapshot(NAME, "Queued"))
    watch.record(WORKSPACE.id, {NAME: JobSnapshot(NAME, status)})
    return watch


def test_a_running_job_is_followed_from_the_pollers_listing():
    azure, watch = FakeAzure(), polled(JobWatch(), "Running")
    scope = make(azure, previous=submitted("Queued"), watch=watch)
    result = run(follow_the_job, scope)
    assert (result.outcome, result.reason) == (Outcome.PROGRESSING, "Running")
    assert watch.follows(WORKSPACE.id, NAME)
    assert scope.status.start_time == "2026-11-26T10:00:00Z"
    assert azure.calls == []


def test_after_a_restart_a_running_job_is_followed_without_reading_it():
    azure, watch = FakeAzure(), JobWatch()
    run(follow_the_job, make(azure, previous=submitted("Running"), watch=watch))
    assert azure.calls == []
    assert watch.follows(WORKSPACE.id, NAME)


def evaluated(azure: FakeAzure, metrics: dict[str, float], name: str = NAME) -> None:
    """What amlwire's evaluator logs for a validation: its metrics (with the episode count) and its evidence."""
    azure.metrics[name] = {"episodes": 128.0, **metrics}
    azure.params[name] = {
        "amlwire.task": "Isaac-Velocity-Rough-Anymal-C-Play-v0",
        "amlwire.checkpoint": "/mnt/model/model_1500.pt",
        "amlwire.checkpoint_sha256": "ab" * 32,
        "amlwire.seed": "42",
        "amlwire.num_envs": "64",
    }


def test_a_completed_job_records_metrics_verdict_and_registers_the_checkpoint():
    azure = FakeAzure()
    azure.jobs[(WORKSPACE.id.lower(), NAME)] = JobSnapshot(NAME, "Completed")
    evaluated(azure, {"success_rate": 0.95})
    job = spec(register={"modelName": "anymal", "type": "custom_model"})
    scope = make(azure, previous=submitted("Running"), watch=polled(JobWatch(), "Completed"), job=job)
    result = reconcile_job(scope)
    status = result.status
    assert (status.verdict, status.metrics["success_rate"], status.registered_model.name) == ("Passed", 0.95, "anymal")
    assert status.evidence["checkpoint_sha256"] == "ab" * 32
    assert next(c for c in status.conditions if c.type == "Ready").status == "True"
    assert {e.reason for e in result.events} >= {r.MODEL_REGISTERED, r.COMPLETED}


def test_a_metric_below_the_gate_fails_the_verdict_and_registers_nothing():
    azure = FakeAzure()
    azure.jobs[(WORKSPACE.id.lower(), NAME)] = JobSnapshot(NAME, "Completed")
    evaluated(azure, {"success_rate": 0.41})
    result = reconcile_job(
        make(
            azure,
            previous=submitted("Running"),
            watch=polled(JobWatch(), "Completed"),
            job=spec(register={"modelName": "anymal"}),
        )
    )
    stalled = next(c for c in result.status.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason) == ("True", r.VERDICT_FAILED)
    assert azure.count("register_model") == 0


def test_a_storage_failure_gets_a_hint_naming_the_broken_link():
    azure = FakeAzure()
    azure.jobs[(WORKSPACE.id.lower(), NAME)] = JobSnapshot(NAME, "Failed")
    azure.details[NAME] = JobDetails(
        error={
            "code": "UserError",
            "message": "permission denied",
            "innerError": {"code": "ScriptExecution.StreamAccess.Authentication"},
        }
    )
    view = view_of(
        "robotics-gpu",
        example("attachedcompute.yaml"),
        {
            "conditions": [
                {"type": "AccessReady", "status": "False", "reason": "RoleAssignmentMissing", "message": "no role"}
            ]
        },
    )
    result = reconcile_job(make(azure, view=view, previous=submitted("Running"), watch=polled(JobWatch(), "Failed")))
    assert result.status.failure.code == "ScriptExecution.StreamAccess.Authentication"
    assert "AccessReady is False (RoleAssignmentMissing" in (result.status.failure.hint or "")
    stalled = next(c for c in result.status.conditions if c.type == "Stalled")
    assert stalled.reason == r.STORAGE_ACCESS_FAILED
    assert [e.reason for e in result.events if e.type == "Warning"] == [r.JOB_FAILED]


MLFLOW_TIMES = ("2026-11-26T10:01:00Z", "2026-11-26T10:04:00Z")
HISTORY_TIMES = ("2026-11-26T10:00:00Z", "2026-11-26T10:05:00Z")  # what FakeAzure's run history says


@table(
    ("case", "status", "mlflow", "reads", "times"),
    [
        ("completed, run ended", "Completed", MLFLOW_TIMES, ["job_results"], MLFLOW_TIMES),
        ("completed, no end", "Completed", (MLFLOW_TIMES[0], None), ["job_results", "job_details"], HISTORY_TIMES),
        ("completed, no times", "Completed", (None, None), ["job_results", "job_details"], HISTORY_TIMES),
        ("canceled", "Canceled", MLFLOW_TIMES, ["job_details"], HISTORY_TIMES),
    ],
)
def test_a_completed_job_takes_its_times_from_its_mlflow_run_and_reads_run_history_only_without_them(
    case, status, mlflow, reads, times
):
    azure = FakeAzure()
    azure.run_times[NAME] = mlflow
    result = finished(azure, status)
    assert [name for name, *_ in azure.calls] == reads
    assert (result.status.start_time, result.status.end_time) == times


def test_an_error_while_recording_results_is_retried_and_keeps_the_job_unfinished():
    azure = FakeAzure()
    azure.jobs[(WORKSPACE.id.lower(), NAME)] = JobSnapshot(NAME, "Completed")
    azure.fail("job_results", throttled(3))
    result = reconcile_job(make(azure, previous=submitted("Running"), watch=polled(JobWatch(), "Completed")))
    assert result.status.end_time is None
    assert result.status.aml_status == "Running"
    assert result.requeue_after == 3


# -- deletion -----------------------------------------------------------------------------------------------
def test_deleting_a_running_job_cancels_it_and_a_finished_one_is_left_alone():
    azure = FakeAzure()
    azure.jobs[(WORKSPACE.id.lower(), NAME)] = JobSnapshot(NAME, "Running")
    done = cancel_job(make(azure, previous=submitted()))
    assert done.finished
    assert [e.reason for e in done.events] == [r.CANCELED]
    azure.set_job(NAME, "Completed")
    assert cancel_job(make(azure, previous=submitted())).events == []
    assert azure.count("cancel_job") == 1


def test_deletion_retries_a_throttled_cancel_and_lets_go_of_a_refused_one():
    azure = FakeAzure()
    azure.jobs[(WORKSPACE.id.lower(), NAME)] = JobSnapshot(NAME, "Running")
    azure.fail("cancel_job", throttled(2))
    first = cancel_job(make(azure, previous=submitted()))
    assert (first.finished, first.requeue_after) == (False, 2)
    assert first.status is not None
    ready = next(c for c in first.status.conditions if c.type == r.READY)
    assert (ready.status, ready.reason) == ("False", r.AZURE_THROTTLED)
    assert ready.message.startswith(f"deletion waits: cancelling AML job {NAME}")
    azure.fail("cancel_job", rejected("forbidden", 403))
    second = cancel_job(make(azure, previous=submitted()))
    assert second.finished
    assert [e.type for e in second.events] == ["Warning"]


# -- the poller ---------------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def followed(name: str, workspace: str = WORKSPACE.id) -> FollowedJob:
    return FollowedJob("robotics", name, "uid-" + name, name, workspace)


def test_the_poller_lists_each_workspace_once_and_updates_only_jobs_that_changed():
    azure, watch, clock, updated = FakeAzure(), JobWatch(), Clock(), []
    for i in range(5):
        azure.jobs[(WORKSPACE.id.lower(), f"j{i}")] = JobSnapshot(f"j{i}", "Running")
        watch.follow(followed(f"j{i}"), JobSnapshot(f"j{i}", "Running"))
    poller = JobPoller(azure, watch, lambda job: updated.append(job.name), interval=10, clock=clock)
    poller.tick()
    assert (azure.count("list_jobs"), updated) == (1, [])
    azure.set_job("j3", "Completed")
    clock.now = 15
    poller.tick()
    assert (azure.count("list_jobs"), updated) == (2, ["j3"])


def test_the_poller_backs_off_while_nothing_changes_and_waits_for_the_due_time():
    azure, watch, clock = FakeAzure(), JobWatch(), Clock()
    azure.jobs[(WORKSPACE.id.lower(), "j")] = JobSnapshot("j", "Running")
    watch.follow(followed("j"), JobSnapshot("j", "Running"))
    poller = JobPoller(azure, watch, lambda job: None, interval=10, clock=clock)
    delays = [poller.tick()]
    for _ in range(5):
        clock.now += delays[-1]
        delays.append(poller.tick())
    assert delays == [15.0, 22.5, 33.75, 50.625, 75.9375, 80.0]
    assert poller.tick() == 80.0  # due again only after the interval: no listing now
    assert azure.count("list_jobs") == 6


@table(
    ("case", "error", "warned"),
    [
        ("its write failed", KubeError("the apiserver is away"), True),
        ("not shown yet", NotShownYet("the pass that submitted it is not written yet"), False),
    ],
)
def test_a_job_whose_update_did_not_land_is_handed_over_again_at_the_next_listing(case, error, warned, caplog):
    azure, watch, clock, attempts = FakeAzure(), JobWatch(), Clock(), []
    azure.jobs[(WORKSPACE.id.lower(), "j")] = JobSnapshot("j", "Completed")
    watch.follow(followed("j"), JobSnapshot("j", "Running"))

    def update(job: FollowedJob) -> None:
        attempts.append(job.name)
        if len(attempts) == 1:
            raise error
        watch.unfollow(job.workspace_id, job.aml_job_name)  # what the follow step does once it is finished

    poller = JobPoller(azure, watch, update, interval=10, clock=clock)
    for _ in range(3):
        clock.now += poller.tick()
    assert attempts == ["j", "j"]
    assert any(r.levelno >= logging.WARNING for r in caplog.records) == warned


def test_the_jobs_one_listing_shows_ended_are_updated_at_once_and_a_failed_one_again_next_time():
    """A restart after AML ended thousands of jobs: their AmlJobs are written by several threads, not in a row."""
    azure, watch, clock = FakeAzure(), JobWatch(), Clock()
    for i in range(6):
        azure.jobs[(WORKSPACE.id.lower(), f"j{i}")] = JobSnapshot(f"j{i}", "Completed")
        watch.follow(followed(f"j{i}"), JobSnapshot(f"j{i}", "Running"))
    all_in = threading.Barrier(3, timeout=5)  # three updates are inside `update` together, or this times out
    done: list[str] = []

    def update(job: FollowedJob) -> None:
        if job.name in ("j0", "j1", "j2"):
            all_in.wait()
        if job.name == "j5" and "j5" not in done:
            done.append("j5")
            raise KubeError("the apiserver is away")
        done.append(job.name)
        watch.unfollow(job.workspace_id, job.aml_job_name)

    with ThreadPoolExecutor(3) as updates:
        poller = JobPoller(azure, watch, update, interval=10, clock=clock, updates=updates)
        clock.now += poller.tick()
        clock.now += poller.tick()
    assert sorted(done) == ["j0", "j1", "j2", "j3", "j4", "j5", "j5"]
    assert watch.followed() == {}


def poller_sees(status: dict[str, Any], clock: Clock) -> tuple[FakeKube, Callable[[], None]]:
    """The job poller about to write AML's news (Running) to an AmlJob whose status is `status`; the pass that
    submitted its AML job started following it at time 0."""
    kube, azure, watch = FakeKube(), models(FakeAzure()), JobWatch(clock)
    azure.jobs[(WORKSPACE.id.lower(), NAME)] = JobSnapshot(NAME, "Running")
    kube.aml_jobs[("robotics", "anymal-validate-7")] = {
        "metadata": {"name": "anymal-validate-7", "namespace": "robotics", "uid": UID, "generation": 1},
        "spec": example("amljob-validate.yaml"),
        "status": status,
    }
    job = FollowedJob("robotics", "anymal-validate-7", UID, NAME, WORKSPACE.id)
    watch.follow(job, JobSnapshot(NAME, "NotStarted"))
    watch.record(WORKSPACE.id, {NAME: JobSnapshot(NAME, "Running")})  # the listing that brought the news
    services = Services(Settings(), azure, kube, TIMINGS, watch=watch)
    update = poller_update(services, cast(Any, {"robotics-gpu": [compute()]}))
    return kube, lambda: update(job)


@table(
    ("case", "status", "seconds", "writes"),
    [
        ("submission not written yet", {}, 1.0, False),
        ("written", submitted("NotStarted").model_dump(by_alias=True, mode="json", exclude_none=True), 1.0, True),
        ("never written", {}, WRITE_GRACE + 1, True),
    ],
)
def test_the_poller_writes_no_news_over_a_submission_kopf_has_not_written_yet(case, status, seconds, writes):
    """kopf writes a pass's status after the handler returns: news written before it would be overwritten by
    the pass's older status (NotStarted over Running), and the poller would not write it again."""
    clock = Clock()
    kube, update = poller_sees(status, clock)
    clock.now = seconds
    if writes:
        update()
        assert kube.aml_jobs[("robotics", "anymal-validate-7")]["status"]["amlStatus"] == "Running"
    else:
        with pytest.raises(NotShownYet):
            update()
        assert "patch_aml_job_status" not in kube.calls


def test_a_listing_that_fails_is_logged_and_tried_next_interval():
    azure, watch, clock = FakeAzure(), JobWatch(), Clock()
    watch.follow(followed("j"), JobSnapshot("j", "Running"))
    azure.fail("list_jobs", throttled(5))
    poller = JobPoller(azure, watch, lambda job: None, interval=10, clock=clock)
    assert poller.tick() == 15.0


# -- hints that point the right way; jobs whose AML job or compute is gone -----------------------------------
def failed_with(azure: FakeAzure, error: dict[str, Any]) -> FakeAzure:
    azure.jobs[(WORKSPACE.id.lower(), NAME)] = JobSnapshot(NAME, "Failed")
    azure.details[NAME] = JobDetails(error=error)
    return azure


def test_a_token_exchange_for_an_unlisted_account_is_f04_for_that_account():
    message = (
        "AADSTS70021: No matching federated identity record found for presented assertion. Assertion "
        "Issuer: 'https://oidc/'. Assertion Subject: 'system:serviceaccount:team-a:default'."
    )
    azure = failed_with(FakeAzure(), {"code": "UserError", "message": message})
    result = reconcile_job(make(azure, previous=submitted("Running"), watch=polled(JobWatch(), "Failed")))
    hint = result.status.failure.hint or ""
    assert "system:serviceaccount:team-a:default (field failure F04)" in hint
    assert "{namespace: team-a, name: default}" in hint
    assert "F23" not in hint


def test_key_based_authentication_refused_is_f17():
    error = {
        "code": "UserError",
        "message": "KeyBasedAuthenticationNotPermitted: Key based authentication is not "
        "permitted on this storage account.",
    }
    azure = failed_with(FakeAzure(), error)
    result = reconcile_job(make(azure, previous=submitted("Running"), watch=polled(JobWatch(), "Failed")))
    assert "F17" in (result.status.failure.hint or "")
    assert "F23" not in (result.status.failure.hint or "")


def test_a_storage_failure_asks_its_compute_to_look_again_now():
    error = {"code": "ScriptExecution.StreamAccess.Authentication", "message": "permission denied"}
    azure = failed_with(FakeAzure(), error)
    result = reconcile_job(make(azure, previous=submitted("Running"), watch=polled(JobWatch(), "Failed")))
    assert result.reverify == "robotics-gpu"
    other = failed_with(FakeAzure(), {"code": "UserError", "message": "CUDA out of memory"})
    assert (
        reconcile_job(make(other, previous=submitted("Running"), watch=polled(JobWatch(), "Failed"))).reverify is None
    )


@pytest.mark.parametrize(("compute_gone", "reason"), [(True, r.COMPUTE_NOT_FOUND), (False, r.AML_JOB_NOT_FOUND)])
def test_a_job_whose_aml_job_is_gone_is_stalled_not_followed_forever(compute_gone, reason):
    watch = JobWatch()
    result = reconcile_job(make(FakeAzure(), previous=submitted("Completed"), watch=watch, no_compute=compute_gone))
    stalled = next(c for c in result.status.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason) == ("True", reason)
    assert not watch.follows(WORKSPACE.id, NAME)


def test_a_command_job_on_a_cpu_instance_type_is_not_refused():
    view = with_instance_types({"name": "cpu-1", "resources": {"limits": {"cpu": "8", "memory": "8Gi"}}})
    result = run(
        submit_the_job, make(models(FakeAzure()), view=view, job=spec("amljob-command.yaml", instanceType="cpu-1"))
    )
    assert result.outcome is Outcome.DONE


def finished(azure: FakeAzure, status: str, job: AmlJobSpec | None = None, **previous: Any):
    azure.jobs[(WORKSPACE.id.lower(), NAME)] = JobSnapshot(NAME, status)
    scope = make(azure, previous=submitted("Running", **previous), watch=polled(JobWatch(), status), job=job)
    return reconcile_job(scope)


def test_a_validation_that_completed_without_evidence_has_no_verdict_and_says_why():
    azure = FakeAzure()
    azure.metrics[NAME] = {"success_rate": 0.0}  # Isaac Sim's fast shutdown exited 0 before the evaluation
    result = finished(azure, "Completed", spec(register={"modelName": "anymal"}))
    stalled = next(c for c in result.status.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason) == ("True", r.NO_EVIDENCE)
    assert "no episodes counted; no task, checkpoint_sha256, seed, num_envs" in stalled.message
    assert result.status.verdict is None
    assert azure.count("register_model") == 0
    assert [e.reason for e in result.events if e.type == "Warning"] == [r.NO_EVIDENCE]


def test_a_gate_on_a_metric_the_job_never_logged_is_no_verdict_not_a_missed_gate():
    azure = FakeAzure()
    azure.metrics[NAME] = {"loss": 0.1}
    job = spec("amljob-command.yaml", gate={"metric": "accuracy", "min": 0.9})
    result = finished(azure, "Completed", job)
    stalled = next(c for c in result.status.conditions if c.type == "Stalled")
    assert (stalled.reason, result.status.verdict) == (r.GATE_METRIC_NOT_LOGGED, None)
    assert "without logging metric accuracy, which spec.gate names (metrics logged: loss)" in stalled.message
    # the gate changed after the run to a metric the job did log: the verdict follows
    again = finished(azure, "Completed", spec("amljob-command.yaml", gate={"metric": "loss", "max": 0.2}))
    assert again.status.verdict == "Passed"
    assert again.status.failure is None


def test_a_failed_evaluation_is_reported_with_the_evaluators_own_reason():
    azure = FakeAzure()
    azure.details[NAME] = JobDetails(error={"code": "UserError", "message": "Execution failed. exit 1."})
    azure.tags[NAME] = {"amlwire.failure": "spec.isaacLab.successTerm 'goal' is not a termination term of task T"}
    result = finished(azure, "Failed")
    stalled = next(c for c in result.status.conditions if c.type == "Stalled")
    assert stalled.reason == r.EVALUATION_FAILED
    assert stalled.message == (
        "amlwire's evaluator failed: spec.isaacLab.successTerm 'goal' is not a termination term of task T"
    )
    assert "Execution failed. exit 1." in result.status.failure.message


TRAINING = spec("amljob-train.yaml", resume={"maxAttempts": 2})


def test_a_training_canceled_at_its_timeout_is_resumed_from_its_last_checkpoint():
    azure = models(FakeAzure())
    azure.details[NAME] = JobDetails(error={"code": "UserError", "message": "ran past its timeout"})
    submitted_ = finished(azure, "Canceled", TRAINING, start_time="2026-11-26T09:00:00Z")
    status = submitted_.status
    assert [(a.aml_job_name, a.aml_status) for a in status.attempts] == [(NAME, "Canceled")]
    # the same pass submits attempt 2, reading attempt 1's checkpoint output
    assert (status.aml_job_name, status.aml_status, status.start_time, status.end_time) == (
        NAME + "-a2",
        "NotStarted",
        None,
        None,
    )
    assert azure.submitted[-1].resume_from == NAME
    resumed = next(e for e in submitted_.events if e.reason == r.RESUMED)
    assert (resumed.type, "attempt 2 of 2 continues from its last checkpoint" in resumed.message) == ("Warning", True)
    # attempt 2 fails too: no attempts left, the job is Stalled with its failure
    azure.jobs[(WORKSPACE.id.lower(), NAME + "-a2")] = JobSnapshot(NAME + "-a2", "Failed")
    azure.details[NAME + "-a2"] = JobDetails(error={"code": "UserError", "message": "exit 1"})
    watch = JobWatch()
    second = FollowedJob("robotics", "anymal-validate-7", UID, NAME + "-a2", WORKSPACE.id)
    watch.follow(second, JobSnapshot(NAME + "-a2", "Running"))
    watch.record(WORKSPACE.id, {NAME + "-a2": JobSnapshot(NAME + "-a2", "Failed")})
    ended = reconcile_job(make(azure, previous=submitted_.status, watch=watch, job=TRAINING))
    assert ended.status.aml_status == "Failed"
    assert len(ended.status.attempts) == 1
    assert next(c for c in ended.status.conditions if c.type == "Stalled").status == "True"


def test_a_training_whose_storage_wiring_is_broken_is_not_resumed():
    azure = models(FakeAzure())
    azure.details[NAME] = JobDetails(error={"code": "UserError", "innerError": {"code": STREAM}, "message": "denied"})
    result = finished(azure, "Failed", TRAINING)
    assert result.status.attempts == []
    assert result.status.aml_status == "Failed"


def test_a_completed_training_or_one_without_resume_is_not_resumed():
    azure = models(FakeAzure())
    assert finished(azure, "Completed", TRAINING).status.attempts == []
    azure.details[NAME] = JobDetails(error={"code": "UserError", "message": "exit 1"})
    assert finished(azure, "Failed", spec("amljob-train.yaml", resume=None)).status.attempts == []


def test_a_job_whose_compute_is_gone_is_still_followed_to_its_end():
    azure, watch = FakeAzure(), polled(JobWatch(), "Completed")
    azure.jobs[(WORKSPACE.id.lower(), NAME)] = JobSnapshot(NAME, "Completed")
    evaluated(azure, {"success_rate": 0.97})
    result = reconcile_job(make(azure, previous=submitted("Running"), watch=watch, no_compute=True))
    assert next(c for c in result.status.conditions if c.type == "Ready").status == "True"


def test_a_rejection_names_the_fields_and_how_to_change_them():
    azure = models(FakeAzure())
    azure.fail("submit_job", rejected("Invalid command"))
    result = run(submit_the_job, make(azure))
    assert "spec.command, spec.inputs" in result.message
    assert "delete and recreate the AmlJob" in result.message


def test_a_command_naming_an_undeclared_input_is_refused_by_the_model():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="does not declare"):
        spec("amljob-command.yaml", command="python train.py --lr ${{inputs.lr}}")
    with pytest.raises(ValidationError, match="only output"):
        spec("amljob-command.yaml", command="cp x ${{outputs.model}}")
    assert spec("amljob-command.yaml", command="python train.py --lr ${{ inputs.lr }}", inputs={"lr": "3e-4"})


def test_the_poll_interval_grows_with_what_the_listings_cost_in_arm_reads():
    """Two workspaces of one subscription, 500 jobs each in pages of 50: 20 reads a round, at 5 reads/s."""
    azure, watch, clock = FakeAzure(), JobWatch(), Clock()
    other = WORKSPACE.id.replace("mlw-robotics", "mlw-other")
    for workspace in (WORKSPACE.id, other):
        for i in range(500):
            name = f"{workspace[-5:]}-{i}"
            azure.jobs[(workspace.lower(), name)] = JobSnapshot(name, "Running")
            watch.follow(followed(name, workspace), JobSnapshot(name, "Running"))
    poller = JobPoller(azure, watch, lambda job: None, interval=2, clock=clock, read_rate=5.0)
    poller.tick()
    assert azure.count("list_jobs") == 2
    assert poller.budgeted_interval(WORKSPACE.id) == pytest.approx(20 / 5.0)
    clock.now += 2.0 * BACKOFF  # the backoff alone would poll again now; the budget says not before 4 s
    poller.tick()
    assert azure.count("list_jobs") == 2
    clock.now = 4.0
    poller.tick()
    assert azure.count("list_jobs") == 4


def test_without_a_read_rate_the_interval_is_the_configured_one():
    azure, watch, clock = FakeAzure(), JobWatch(), Clock()
    azure.jobs[(WORKSPACE.id.lower(), "j")] = JobSnapshot("j", "Running")
    watch.follow(followed("j"), JobSnapshot("j", "Running"))
    poller = JobPoller(azure, watch, lambda job: None, interval=10, clock=clock)
    assert poller.tick() == 15.0
    assert poller.budgeted_interval(WORKSPACE.id) == 0.0


def test_statuses_a_job_only_passes_through_cost_no_apiserver_write():
    azure, watch, clock, updated = FakeAzure(), JobWatch(), Clock(), []
    azure.jobs[(WORKSPACE.id.lower(), "j")] = JobSnapshot("j", "Running")
    watch.follow(followed("j"), JobSnapshot("j", "Running"))
    poller = JobPoller(
        azure,
        watch,
        lambda job: updated.append(azure.jobs[(WORKSPACE.id.lower(), "j")].status),
        interval=10,
        clock=clock,
    )
    for status in ("Finalizing", "Completed"):
        azure.set_job("j", status)
        clock.now += poller.tick() + 100
    assert updated == ["Completed"]
