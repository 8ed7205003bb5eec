"""The chart's PrometheusRule and Grafana dashboard: promtool accepts the rules, and every metric they name is
one amlwire exports (scraped from a running operator)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from amlwire_devenv.controlplane import find_binaries
from amlwire_sandbox.ports import free_port
from tests.conftest import REPO
from tests.e2e.test_chart import rendered
from tests.e2e.test_metrics import scrape

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
PROMTOOL = find_binaries(REPO) / "promtool"
ENABLED = ("--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.dashboard.enabled=true")
METRIC = re.compile(r"\bamlwire_[a-z_]+")


def _rule() -> dict:
    return next(d for d in rendered(*ENABLED) if d["kind"] == "PrometheusRule")


def _dashboard() -> dict:
    config_map = next(d for d in rendered(*ENABLED) if d["kind"] == "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    return json.loads(config_map["data"]["amlwire.json"])


def test_promtool_accepts_the_alerting_rules(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(_rule()["spec"]))
    checked = subprocess.run([str(PROMTOOL), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout


def test_the_rules_are_off_unless_asked_for():
    kinds = [d["kind"] for d in rendered()]
    assert "PrometheusRule" not in kinds
    assert "ConfigMap" not in kinds


def test_every_metric_in_the_alerts_and_the_dashboard_is_exported(harness):
    port = free_port()
    harness.start(metrics_port=port)
    harness.wait_ready(harness.apply_compute("robotics-gpu"))
    harness.wait_job(harness.apply_job("amljob-command.yaml"))
    exported = {name for name, _ in scrape(port)}
    exprs = [rule["expr"] for group in _rule()["spec"]["groups"] for rule in group["rules"]]
    exprs += [target["expr"] for panel in _dashboard()["panels"] for target in panel["targets"]]
    named = {m for expr in exprs for m in METRIC.findall(expr)}
    assert named, "the rules name no amlwire metric"
    assert named - exported == set()
