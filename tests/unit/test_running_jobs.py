"""The running-jobs registry an AttachedCompute consults before it detaches or switches identity."""

from __future__ import annotations

from amlwire.reconcile.running import RunningJobs

RUNNING = {"amlJobName": "aml-1", "amlStatus": "Running"}


def test_a_submitted_job_runs_until_aml_says_it_ended():
    jobs = RunningJobs()
    jobs.observe("robotics", "train", "gpu", {})  # not submitted yet
    assert jobs.on("gpu") == ()
    jobs.observe("robotics", "train", "gpu", RUNNING)
    jobs.observe("robotics", "queued", "gpu", {"amlJobName": "aml-2", "amlStatus": "Queued"})
    assert jobs.on("gpu") == ("robotics/queued", "robotics/train")
    jobs.observe("robotics", "train", "gpu", {**RUNNING, "amlStatus": "Completed"})
    assert jobs.on("gpu") == ("robotics/queued",)


def test_a_deleted_job_is_forgotten_and_a_moved_one_counts_on_its_new_compute_only():
    jobs = RunningJobs()
    jobs.seed([("robotics/a", "gpu"), ("robotics/b", "gpu")])
    jobs.forget("robotics", "a")
    jobs.observe("robotics", "b", "cpu", RUNNING)
    assert (jobs.on("gpu"), jobs.on("cpu")) == ((), ("robotics/b",))
    jobs.forget("robotics", "never-seen")
    assert jobs.on("other") == ()
