"""Argo CD's health checks (Lua in examples/argocd/argocd-cm.yaml) against real status objects of both kinds."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

from tests.conftest import REPO
from tests.e2e.harness import CLUSTER_ID

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
CONFIG = yaml.safe_load((REPO / "examples" / "argocd" / "argocd-cm.yaml").read_text())["data"]


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(CONFIG[f"resource.customizations.health.amlwire.io_{kind}"])
    return {"status": result["status"], "message": result["message"]}


def test_attached_compute_health_through_its_life(harness):
    harness.ctl.add_fault(route="aks.cluster", latency=2, count=1)
    harness.start()
    name = harness.apply_compute()
    assert health("AttachedCompute", {"metadata": {"generation": 1}})["status"] == "Progressing"
    first = harness.wait_condition(name, "Reconciling", "True", "FirstVisit", timeout=2)
    assert health("AttachedCompute", first)["status"] == "Progressing"
    ready = harness.wait_ready(name)
    assert health("AttachedCompute", ready) == {"status": "Healthy", "message": "All links are in place."}
    harness.ctl.patch(CLUSTER_ID, {"properties": {"oidcIssuerProfile": {"enabled": False, "issuerURL": None}}})
    harness.patch_compute(name, {"deletionPolicy": "Orphan"})
    stalled = harness.wait_condition(name, "Stalled", "True", "OIDCIssuerDisabled")
    verdict = health("AttachedCompute", stalled)
    assert verdict["status"] == "Degraded"
    assert verdict["message"].startswith(
        "OIDCIssuerDisabled: ClusterReady: AKS cluster aks-robotics has no OIDC issuer"
    )
    newer = dict(stalled, metadata={**stalled["metadata"], "generation": stalled["metadata"]["generation"] + 1})
    assert health("AttachedCompute", newer)["status"] == "Progressing"


def test_aml_job_health_through_its_life(harness):
    harness.wired()
    harness.ctl.timing(job={"queuedSeconds": 0.2, "runningSeconds": 2})
    passed = harness.apply_job("amljob-validate.yaml")
    running = harness.wait_job(passed, "Reconciling", "True", "Running")
    assert health("AmlJob", running) == {"status": "Progressing", "message": "AML job Running"}
    done = harness.wait_job(passed)
    assert health("AmlJob", done) == {"status": "Healthy", "message": "The AML job completed. Verdict Passed."}
    failed = harness.apply_job("amljob-validate.yaml", model={"name": "isaaclab-anymal-weak", "version": "1"})
    degraded = health("AmlJob", harness.wait_job(failed, "Stalled", "True", "VerdictFailed"))
    assert degraded["status"] == "Degraded"
    assert degraded["message"].startswith("VerdictFailed: ")
