"""The operator, started in-process against the real apiserver, sets first-visit status on both kinds."""

from __future__ import annotations

import pytest

from amlwire.config import Settings
from amlwire.devenv.cluster import ensure_namespace
from amlwire.handlers.operator import BackgroundOperator
from amlwire.main import build_services
from tests.conftest import GROUP, VERSION, wait_for
from tests.kube.test_admission import create, fresh, load

pytestmark = pytest.mark.kube


@pytest.fixture
def operator(control_plane):
    settings = Settings(kubeconfig=control_plane.kubeconfig, liveness_endpoint=None, metrics_port=0)
    running = BackgroundOperator(settings, build_services(settings)).start()
    yield running
    running.stop()


def _condition(obj, type_):
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def test_first_visit_status_on_both_kinds(kube, custom, operator):
    ensure_namespace(kube, "robotics")
    compute = create(custom, fresh(load("attachedcompute.yaml")))
    job = create(custom, fresh(load("amljob-train.yaml")))

    def visited_compute():
        obj = custom.get_cluster_custom_object(GROUP, VERSION, "attachedcomputes", compute["metadata"]["name"])
        return obj if _condition(obj, "Reconciling") else None

    def visited_job():
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", job["metadata"]["name"])
        return obj if _condition(obj, "Reconciling") else None

    seen_compute = wait_for(visited_compute, what="AttachedCompute first-visit status")
    seen_job = wait_for(visited_job, what="AmlJob first-visit status")
    for obj in (seen_compute, seen_job):
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert _condition(obj, "Reconciling")["status"] == "True"
        assert _condition(obj, "Ready")["status"] == "Unknown"
        assert _condition(obj, "Stalled")["status"] == "False"
    assert _condition(seen_compute, "ClusterReady")["reason"] == "NotYetChecked"
