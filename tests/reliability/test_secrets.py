"""No secret reaches a log, an event, a status or an AML job: every token in play is planted and searched for.

The operator runs as in its pod, at DEBUG (the most it ever says), through a wiring, a job that completes
and a job that fails. Every access token the sandbox issued carries a unique canary; the projected
service-account token and the apiserver bearer token are searched for too.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from amlwire_devenv.chaos import OperatorProcess, is_true, wait_until
from tests.conftest import GROUP, VERSION

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]


def _fragments(token: str) -> list[str]:
    """The parts of a token that identify it: the whole, and each JWT segment long enough to be unique."""
    return [token, *[part for part in token.split(".") if len(part) >= 24]]


def test_no_token_in_logs_events_status_or_jobs(harness, tmp_path):
    log_file = tmp_path / "operator.log"
    operator = OperatorProcess(harness, log_file, log_level="DEBUG")
    operator.start()
    try:
        compute = harness.apply_compute("robotics-gpu")
        assert wait_until(lambda: is_true(harness.compute(compute)), 60)
        harness.ctl.add_job_rule({"commandContains": "torch.cuda"}, outcome="Failed")
        good = harness.apply_job("amljob-train.yaml")
        bad = harness.apply_job("amljob-command.yaml")
        for job, status in ((good, "Completed"), (bad, "Failed")):
            assert wait_until(lambda j=job, s=status: (harness.job(j).get("status") or {}).get("amlStatus") == s, 60)
    finally:
        operator.stop()

    issued = harness.ctl.issued_tokens()
    assert issued, "the operator never authenticated to Azure, so nothing was tested"
    secrets = {f"sandbox access token {i}": t for i, t in enumerate(issued)}
    secrets["projected service-account token"] = harness.token_file.read_text().strip()
    secrets["apiserver bearer token"] = harness.plane.admin_token

    custom = client.CustomObjectsApi(harness.kube)
    places = {
        "operator log": log_file.read_text(errors="replace"),
        "events": json.dumps(harness.kube.sanitize_for_serialization(harness.core.list_event_for_all_namespaces())),
        "AttachedComputes": json.dumps(custom.list_cluster_custom_object(GROUP, VERSION, "attachedcomputes")),
        "AmlJobs": json.dumps(custom.list_cluster_custom_object(GROUP, VERSION, "amljobs")),
        "AML jobs as submitted": json.dumps(
            {k: v for k, v in harness.ctl.state()["resources"].items() if "/jobs/" in k}
        ),
    }
    assert len(places["operator log"]) > 10_000, "DEBUG logging did not happen; the search would prove nothing"
    assert '"amlStatus": "Failed"' in places["AmlJobs"]
    leaks = [
        f"{what} found in {where}"
        for what, token in secrets.items()
        for fragment in _fragments(token)
        for where, text in places.items()
        if fragment in text
    ]
    assert leaks == []
