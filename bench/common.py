"""Shared set-up for the benches: the local stack with the sandbox at full speed."""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import client

from amlwire_devenv.chaos import is_true, wait_until
from amlwire_devenv.cluster import as_object, items_of
from amlwire_devenv.controlplane import ControlPlane, find_binaries
from amlwire_devenv.stack import LocalStack, kube_client, prepare_cluster
from amlwire_sandbox.world import World

REPO = Path(__file__).resolve().parent.parent
GROUP, VERSION = "amlwire.io", "v1alpha1"


def fast_world() -> World:
    """The example world at full speed: no operation delays, and ARM's request budget off (bench/scale.py
    measures amlwire inside it; the other benches measure amlwire's own cost)."""
    world = World.load(REPO / "examples" / "sandbox" / "world.yaml")
    world.arm_limits.enabled = False
    world.timing.lro_seconds = 0.0
    world.timing.fic_write_window_seconds = 0.01
    world.timing.fic_propagation_seconds = 0.0
    world.timing.role_propagation_seconds = 0.0
    return world


def start_plane() -> tuple[ControlPlane, client.ApiClient]:
    plane = ControlPlane(find_binaries(REPO), workdir=Path(tempfile.mkdtemp(prefix="amlwire-bench-"))).start()
    kube = kube_client(plane)
    prepare_cluster(kube)
    return plane, kube


def stack(plane: ControlPlane, kube: client.ApiClient, world: World | None = None) -> LocalStack:
    return LocalStack(
        plane, copy.deepcopy(world or fast_world()), Path(tempfile.mkdtemp(prefix="amlwire-stack-")), kube
    )


def wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> float:
    """Seconds until predicate() held; TimeoutError if it did not within `timeout`."""
    started = time.monotonic()
    if not wait_until(predicate, timeout, interval):
        raise TimeoutError(f"not done after {timeout}s")
    return time.monotonic() - started


def is_ready(custom: client.CustomObjectsApi, name: str) -> bool:
    return is_true(as_object(custom.get_cluster_custom_object(GROUP, VERSION, "attachedcomputes", name)))


def delete_everything(custom: client.CustomObjectsApi) -> None:
    """Every AmlJob and AttachedCompute, finalizers and all: the next run starts from an empty apiserver."""
    for item in items_of(custom.list_cluster_custom_object(GROUP, VERSION, "amljobs")):
        meta = item["metadata"]
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], "amljobs", meta["name"], {"metadata": {"finalizers": []}}
        )
        custom.delete_namespaced_custom_object(GROUP, VERSION, meta["namespace"], "amljobs", meta["name"])
    for item in items_of(custom.list_cluster_custom_object(GROUP, VERSION, "attachedcomputes")):
        name = item["metadata"]["name"]
        custom.patch_cluster_custom_object(GROUP, VERSION, "attachedcomputes", name, {"metadata": {"finalizers": []}})
        custom.delete_cluster_custom_object(GROUP, VERSION, "attachedcomputes", name)
