"""`amlwire run` logs as its pod does: with AMLWIRE_LOG_FORMAT=json every line is JSON, and lines about an
object name it."""

from __future__ import annotations

import json
import signal

import pytest

from amlwire_devenv.stack import spawn_operator

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]


def test_json_mode_writes_only_json_and_names_the_objects(harness, tmp_path):
    log = tmp_path / "operator.log"
    process = spawn_operator(harness, log, log_format="json")
    try:
        compute = harness.apply_compute("robotics-gpu")
        harness.wait_ready(compute, timeout=60)
        harness.wait_job(harness.apply_job("amljob-command.yaml"), timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not JSON: {line[:300]}")
    about = [r for r in records if r.get("object")]
    assert any(r["object"].get("name") == compute for r in about)
    routine = [r for r in records if "'track_running' succeeded" in str(r.get("message", ""))]
    assert routine == [], "every AmlJob event's bookkeeping is DEBUG, not a line per event"
