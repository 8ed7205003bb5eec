"""kube-apiserver restarts under a running operator: it reconnects by itself and carries on."""

from __future__ import annotations

import pytest

from amlwire_devenv.chaos import job_problems
from tests.conftest import wait_for

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]


def test_operator_recovers_from_an_apiserver_restart_without_restarting(harness, kube):
    compute = harness.wired()
    operator = harness.operator
    running = harness.apply_job("amljob-train.yaml")
    harness.ctl.timing(job={"queuedSeconds": 3.0, "runningSeconds": 0.5})
    held = harness.apply_job("amljob-validate.yaml")
    wait_for(lambda: (harness.job(held).get("status") or {}).get("amlJobName"), timeout=20, what="held job submitted")

    harness.plane.restart_apiserver()
    wait_for(lambda: harness.core.list_namespace(), timeout=60, what="apiserver back")

    # work that was in flight finishes, and new work (watch events after the restart) is handled
    harness.wait_job(running, timeout=60)
    harness.wait_job(held, timeout=60)
    harness.patch_compute(compute, {"jobs": {"allowedNamespaces": ["robotics", "azureml-jobs"]}})
    harness.wait_reconciled(compute, timeout=60)
    after = harness.apply_job("amljob-validate.yaml")
    harness.wait_job(after, timeout=60)
    assert harness.operator is operator
    assert operator.error is None
    # exactly one AML job for each of this test's AmlJobs (objects other tests left may run too)
    aml = harness.aml_jobs()
    assert [p for job in (running, held, after) for p in job_problems(harness.job(job), aml)] == []
