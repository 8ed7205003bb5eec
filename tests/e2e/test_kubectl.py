"""What a cluster admin sees with the real kubectl (built by `make testenv`): describe, get, explain, apply, plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from amlwire_devenv.controlplane import find_binaries
from amlwire_devenv.stack import operator_environment
from tests.conftest import REPO, wait_for

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
KUBECTL = find_binaries(REPO) / "kubectl"


def kubectl(harness, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(harness.plane.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_describe_shows_the_events_of_a_cluster_scoped_compute(harness):
    name = harness.wired()
    reasons = wait_for(lambda: {e.reason for e in harness.events(name)}, what="events about the compute")
    described = kubectl(harness, "describe", "amlc", name)
    assert described.returncode == 0, described.stderr
    events = described.stdout.split("\nEvents:", 1)[1]
    assert "<none>" not in events.splitlines()[0]
    assert "FederatedCredentialCreated" in events  # the action, not "Missing"
    assert any(reason in events for reason in reasons)


def test_get_wide_shows_why_a_job_is_refused(harness):
    harness.start()
    name = harness.apply_job("amljob-command.yaml", computeRef="no-such-compute")
    harness.wait_job(name, "Ready", "False")
    wide = kubectl(harness, "get", "amlj", name, "-n", "robotics", "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    header, row = wide.stdout.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "COMPUTE", "TEMPLATE", "READY", "REASON"]
    assert "MESSAGE" in header
    assert row.split()[3:5] == ["False", "ComputeNotFound"]
    assert "no-such-compute" in row  # the message names it


def test_explain_reads_the_schema_descriptions(harness):
    explained = kubectl(harness, "explain", "attachedcompute.spec.identity")
    assert explained.returncode == 0, explained.stderr
    assert "resourceId" in explained.stdout
    assert "DESCRIPTION" in explained.stdout


def test_the_examples_apply_server_side(harness):
    applied = kubectl(
        harness,
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        str(REPO / "examples" / "attachedcompute.yaml"),
        "-f",
        str(REPO / "examples" / "amljob-train.yaml"),
    )
    assert applied.returncode == 0, applied.stderr
    assert "serverside-applied (server dry run)" in applied.stdout


def _plugin_environment(harness, tmp: Path) -> dict[str, str]:
    """kubectl finds `kubectl-amlwire` on PATH (krew naming); it reads the user's kubeconfig."""
    environment = operator_environment(harness)
    environment.pop("AMLWIRE_KUBECONFIG")
    environment["KUBECONFIG"] = str(harness.plane.kubeconfig)
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
    environment["HOME"] = str(tmp)
    return environment


def test_kubectl_amlwire_doctor_and_lint_run_as_a_plugin(harness, tmp_path):
    name = harness.wired()
    environment = _plugin_environment(harness, tmp_path)
    listed = kubectl(harness, "plugin", "list", env=environment)
    assert "kubectl-amlwire" in listed.stdout
    doctor = subprocess.run(
        [str(KUBECTL), "amlwire", "doctor", name], capture_output=True, text=True, timeout=120, env=environment
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert name in doctor.stdout
    lint = subprocess.run(
        [str(KUBECTL), "amlwire", "lint", str(REPO / "tests" / "lint" / "corpus" / "good-command.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_plugin_takes_kubectls_global_flags(harness, tmp_path):
    """As krew plugins do: kubectl hands `--kubeconfig`, `--context` and `-n` to the plugin with its arguments."""
    name = harness.wired()
    environment = _plugin_environment(harness, tmp_path)
    environment["KUBECONFIG"] = str(tmp_path / "absent")  # nothing but the flags says where the cluster is
    config = yaml.safe_load(harness.plane.kubeconfig.read_text())
    config["clusters"].append({"name": "elsewhere", "cluster": {"server": "https://127.0.0.1:1"}})
    config["contexts"].append({"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "admin"}})
    config["current-context"] = "elsewhere"  # the current context is not the one asked for
    kubeconfig = tmp_path / "two-contexts.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    flags = ["--kubeconfig", str(kubeconfig), "--context", "local", "-n", "robotics"]
    doctor = subprocess.run(
        [str(KUBECTL), "amlwire", "doctor", name, *flags], capture_output=True, text=True, timeout=120, env=environment
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"{name} (aks-robotics → mlw-robotics)" in doctor.stdout
    elsewhere = subprocess.run(
        [str(KUBECTL), "amlwire", "doctor", name, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert elsewhere.returncode == 2  # the current context's cluster does not answer
    lint = subprocess.run(
        [str(KUBECTL), "amlwire", "lint", str(REPO / "tests" / "lint" / "corpus" / "good-command.yaml"), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
