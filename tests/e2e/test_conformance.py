"""`amlwire conformance` against the sandbox under each world: it reports the world option's value the sandbox
was set to (so on a real subscription it tells which world the user lives in), writes nothing unless allowed,
and leaves nothing behind, also when interrupted."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kubernetes.client.exceptions import ApiException

from amlwire.cli.main import cli
from amlwire.domain.permissions import PERMISSIONS
from amlwire_devenv.stack import inherited_environment
from amlwire_sandbox.world import World
from tests.conftest import REPO, wait_for
from tests.e2e.harness import CLUSTER_ID, IDENTITY_PRINCIPAL, RG, STORAGE_ID, SUB, WORKSPACE_ID

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
MODEL = {"name": "isaaclab-anymal-latest", "version": "2", "type": "custom_model"}
COMPUTES = f"{WORKSPACE_ID}/computes/"
# Every value of every world option a probe settles, spread over three worlds.
WORLDS = [
    {
        "operationStatusWords": "specExamples",
        "tagNames": "refuse",
        "deletedClusterIssuer": "notFound",
        "jobTimeout": "Canceled",
        "streamAccessError": "flat",
    },
    {
        "operationStatusWords": "inProgress",
        "tagNames": "accept",
        "deletedClusterIssuer": "served",
        "jobTimeout": "Failed",
        "streamAccessError": "nested",
    },
    {
        "operationStatusWords": "other",
        "tagNames": "refuse",
        "deletedClusterIssuer": "notFound",
        "jobTimeout": "Canceled",
        "streamAccessError": "messageOnly",
    },
]
# The timings it measures, per world (seconds): a credential's write window, its propagation, a role's.
TIMINGS = [
    {"ficWriteWindowSeconds": 0.0, "ficPropagationSeconds": 0.0, "rolePropagationSeconds": 0.0},
    {"ficWriteWindowSeconds": 0.5, "ficPropagationSeconds": 1.5, "rolePropagationSeconds": 1.0},
    {"ficWriteWindowSeconds": 1.0, "ficPropagationSeconds": 0.5, "rolePropagationSeconds": 2.0},
]
SNAKE = {
    "operationStatusWords": "operation_status_words",
    "tagNames": "tag_names",
    "deletedClusterIssuer": "deleted_cluster_issuer",
    "jobTimeout": "job_timeout",
    "streamAccessError": "stream_access_error",
}


def environment(harness) -> dict[str, str]:
    return {
        **harness.azure_environment(),
        "AMLWIRE_ARM_ENDPOINT": harness.sandbox.base_url,
        "AMLWIRE_CA_BUNDLE": str(harness.sandbox.ca_file),
    }


def arguments(out: Path, *extra: str) -> list[str]:
    return [
        "conformance",
        "--subscription",
        SUB,
        "--resource-group",
        "rg-ml",
        "--workspace",
        "mlw-robotics",
        "--cluster",
        CLUSTER_ID,
        "--out",
        str(out),
        *extra,
    ]


def run(harness, monkeypatch, out: Path, *extra: str) -> tuple[int, str, dict]:
    for key, value in environment(harness).items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, arguments(out, *extra), catch_exceptions=False)
    report = json.loads((out / "conformance.json").read_text()) if (out / "conformance.json").exists() else {}
    return result.exit_code, result.output, report


def by_option(report: dict) -> dict[str, str | None]:
    return {f["option"].split(".")[-1]: f["value"] for f in report["findings"] if f["option"]}


def our_computes(harness) -> list[str]:
    return [rid for rid in harness.ctl.resources_under(COMPUTES) if rid.rsplit("/", 1)[1].startswith("amlwconf-")]


def a_job_that_failed_on_storage(harness) -> str:
    for key, value in harness.ctl.state()["resources"].items():  # the storage role goes, behind amlwire's back
        at_storage = key.lower().startswith(STORAGE_ID.lower() + "/providers/microsoft.authorization/")
        if at_storage and value["properties"]["principalId"] == IDENTITY_PRINCIPAL:
            harness.ctl.delete(key)
    name = harness.apply_job("amljob-validate.yaml", name="storage-denied", model={**MODEL, "delivery": "Mount"})
    return harness.wait_job(name, "Stalled", "True", timeout=60)["status"]["amlJobName"]


def a_job_that_ran_past_its_timeout(harness) -> str:
    harness.ctl.add_job_rule({"displayName": "too-long"}, timeoutSeconds=1.0, isaacSim={"iterationSeconds": 0.05})
    name = harness.apply_job("amljob-train.yaml", name="too-long", displayName="too-long", resume={"mode": "Never"})
    status = harness.wait_job(name, "Finished", "True", timeout=90)["status"]
    assert status["amlStatus"] in ("Canceled", "Failed"), status
    return status["amlJobName"]


def a_deleted_clusters_issuer(harness) -> str:
    gone = CLUSTER_ID.replace("aks-robotics", harness.add_cluster("aks-deleted"))
    issuer = harness.ctl.resource(gone)["properties"]["oidcIssuerProfile"]["issuerURL"]
    harness.ctl.delete(gone)
    return issuer


@pytest.mark.parametrize(
    ("world", "timings"), zip(WORLDS, TIMINGS, strict=True), ids=[w["operationStatusWords"] for w in WORLDS]
)
def test_conformance_reports_the_world_it_runs_in_and_leaves_nothing(harness, monkeypatch, tmp_path, world, timings):
    for option, value in world.items():
        setattr(harness.sandbox.sandbox.world.rules, SNAKE[option], value)
    harness.wired()
    for role in ("Managed Identity Contributor", "Role Based Access Control Administrator"):  # the scratch group's
        harness.grant(f"{RG}/rg-ml", next(p for p in PERMISSIONS if p.role == role))
    with contextlib.suppress(ApiException):  # AKS has it; this apiserver runs no service-account controller
        harness.core.create_namespaced_service_account("default", {"metadata": {"name": "default"}})
    timed_out = a_job_that_ran_past_its_timeout(harness)
    failed = a_job_that_failed_on_storage(harness)
    issuer = a_deleted_clusters_issuer(harness)
    harness.ctl.timing(**timings)  # after the jobs: a slow role would fail them on storage, not on time
    code, output, report = run(
        harness,
        monkeypatch,
        tmp_path,
        "--allow-writes",
        "--timed-out-job",
        timed_out,
        "--failed-job",
        failed,
        "--deleted-issuer",
        issuer,
        "--kubeconfig",
        str(harness.plane.kubeconfig),
        "--samples",
        "2",
    )
    assert code == 0, output
    found = by_option(report)
    assert {k: found[k] for k in world} == world, json.dumps(report["findings"], indent=1)
    for timing, seconds in timings.items():  # measured: what the sandbox waits, plus the probes' own polling
        assert seconds <= found[timing] < seconds + 0.8, (timing, found[timing], report["findings"])
    assert our_computes(harness) == []  # the probes' computes are detached
    assert "k8s-gpu" in {rid.rsplit("/", 1)[1] for rid in harness.ctl.resources_under(COMPUTES)}  # not the user's
    # the world options file makes the sandbox this world again; the report names no subscription or object
    options = yaml.safe_load((tmp_path / "conformance.yaml").read_text())
    loaded = World.load(REPO / "examples" / "sandbox" / "world.yaml", tmp_path / "conformance.yaml")
    assert {option: getattr(loaded.rules, SNAKE[option]) for option in world} == world
    assert options["rules"] == world
    assert loaded.timing.fic_propagation_seconds == found["ficPropagationSeconds"]
    assert harness.ctl.resources_under(f"{RG}/rg-ml/providers/Microsoft.ManagedIdentity/") == {}
    text = (tmp_path / "conformance.json").read_text()
    assert SUB not in text
    assert IDENTITY_PRINCIPAL not in text
    budget = next(f for f in report["findings"] if f["probe"] == "arm-budget")
    assert budget["figures"]["remainingReads"] > 0


def test_a_read_only_run_makes_no_write_and_says_what_writes_would_settle(harness, monkeypatch, tmp_path):
    harness.wired()
    mark = harness.ctl.mark()
    code, output, report = run(harness, monkeypatch, tmp_path)
    assert code == 0, output
    calls = harness.ctl.calls(mark)
    arm = [c for c in calls if not c["route"].startswith(("entra.", "control.", "metadata."))]
    assert arm, "it asked ARM something"
    assert {c["method"] for c in arm} == {"GET"}, sorted({(c["method"], c["route"]) for c in arm})
    skipped = {f["probe"]: f["skipped"] for f in report["findings"] if "skipped" in f}
    assert "--allow-writes" in skipped["tag-names"]
    assert "--allow-writes" in skipped["operation-status-words"]
    assert "--failed-job" in skipped["stream-access-error"]
    assert "conformance.yaml" in output


def test_a_missing_permission_skips_its_probe_naming_the_role_never_a_traceback(harness, monkeypatch, tmp_path):
    harness.wired()
    operator = next(p for p in PERMISSIONS if p.role == "AzureML Compute Operator")
    harness.revoke(operator)
    code, output, report = run(harness, monkeypatch, tmp_path, "--allow-writes")
    assert code == 0, output
    assert "Traceback" not in output
    tags = next(f for f in report["findings"] if f["probe"] == "tag-names")
    assert tags["value"] is None
    assert "403" in tags["skipped"]
    assert "grant AzureML Compute Operator" in tags["skipped"]
    assert "Microsoft.MachineLearningServices/workspaces/computes/write" in tags["skipped"]


def test_print_permissions_lists_every_probe_and_its_role():
    result = CliRunner().invoke(cli, ["conformance", "--print-permissions"], catch_exceptions=False)
    assert result.exit_code == 0
    for probe in ("arm-budget", "tag-names", "operation-status-words", "job-timeout", "stream-access-error"):
        assert probe in result.output
    assert "AzureML Compute Operator" in result.output


def test_interrupted_mid_way_it_removes_what_it_attached_and_a_rerun_removes_leftovers(harness, tmp_path):
    harness.wired()
    harness.ctl.timing(lroSeconds=4.0)  # the attach runs long enough to be interrupted while it runs
    process = subprocess.Popen(
        [sys.executable, "-m", "amlwire.cli.main", *arguments(tmp_path, "--allow-writes")],
        env={**inherited_environment(), **environment(harness)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        wait_for(lambda: our_computes(harness), 60, 0.05, what="the probe's compute to be attached")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output
    assert b"Traceback" not in output
    assert our_computes(harness) == []

    # a run killed outright leaves its compute; the next run removes it before probing
    harness.ctl.timing(lroSeconds=0.2)
    leftover = f"{COMPUTES}amlwconf-abc123"
    harness.ctl.create(
        leftover,
        "Microsoft.MachineLearningServices/workspaces/computes",
        {"properties": {"computeType": "Kubernetes", "resourceId": CLUSTER_ID, "provisioningState": "Succeeded"}},
    )
    result = subprocess.run(
        [sys.executable, "-m", "amlwire.cli.main", *arguments(tmp_path, "--allow-writes")],
        env={**inherited_environment(), **environment(harness)},
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert our_computes(harness) == []
    assert (tmp_path / "conformance.json").exists()


def test_an_unreachable_arm_skips_each_probe_saying_so(harness, monkeypatch, tmp_path):
    from amlwire_sandbox.ports import free_port

    for key, value in environment(harness).items():  # signed in at the sandbox's Entra; ARM is not there
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AMLWIRE_ARM_ENDPOINT", f"https://127.0.0.1:{free_port()}")
    result = CliRunner().invoke(cli, arguments(tmp_path / "down"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    findings = json.loads((tmp_path / "down" / "conformance.json").read_text())["findings"]
    asked = [f for f in findings if f["probe"] in ("arm-budget", "job-timeout") or f["probe"] == "tag-names"]
    assert all(f["value"] is None for f in asked)
    assert any("Azure could not be asked" in f.get("skipped", "") for f in asked), asked
