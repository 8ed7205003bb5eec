"""/metrics serves the named series, and their values match what happened."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from amlwire_sandbox.ports import free_port

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_a_wiring_and_a_job(harness):
    port = free_port()
    harness.start(metrics_port=port)
    before = scrape(port)
    mark = harness.ctl.mark()
    compute = harness.apply_compute("robotics-gpu")
    harness.wait_ready(compute)
    job = harness.apply_job("amljob-train.yaml")
    harness.wait_job(job)
    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("amlwire_reconciles_total", kind="AttachedCompute", result="ready") >= 1
    assert delta("amlwire_reconciles_total", kind="AmlJob", result="ready") >= 1
    assert delta("amlwire_reconcile_duration_seconds_count", kind="AttachedCompute") >= 1
    assert delta("amlwire_reconcile_duration_seconds_sum", kind="AttachedCompute") > 0
    calls = harness.ctl.calls(since=mark)
    for route, method in (("msi.fic", "PUT"), ("authz.roleAssignment", "PUT"), ("ml.job", "PUT")):
        seen = sum(1 for c in calls if c["route"] == route and c["method"] == method and c["status"] in (200, 201))
        assert seen > 0
        assert delta("amlwire_arm_calls_total", route=route, method=method, status="200") == seen, route
    assert delta("amlwire_conditions", kind="AttachedCompute", type="Ready", status="True") == 1
    assert delta("amlwire_conditions", kind="AmlJob", type="Ready", status="True") == 1
    assert delta("amlwire_aml_jobs", status="Completed") == 1
