"""Shared fixtures: a real kube-apiserver with amlwire's CRDs, Kubernetes clients, an in-process operator."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from amlwire_devenv.cluster import amlwire_crds, install_crds
from amlwire_devenv.controlplane import ControlPlane, ControlPlaneError, find_binaries
from amlwire_sandbox.world import RoleAssignmentWorld, World

REPO = Path(__file__).resolve().parent.parent
GROUP, VERSION = "amlwire.io", "v1alpha1"


OWNER_PRINCIPAL = "11111111-2222-3333-4444-555555555555"  # the subscription's Owner: who drives the tests' SDK calls
OWNER_ROLE_GUID = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"


def demo_world(lro: float, queued: float, running: float) -> World:
    """The demo's world (examples/sandbox/world.yaml), with fast operations and jobs for tests, and an Owner of
    the subscription for the tests' own SDK calls (ARM authorises every call; amlwire gets its own roles)."""
    world = World.load(REPO / "examples" / "sandbox" / "world.yaml")
    subscription = f"/subscriptions/{world.defaults.subscription_id}"
    world.role_assignments.append(
        RoleAssignmentWorld(
            scope=subscription,
            role_definition_id=f"{subscription}/providers/Microsoft.Authorization/roleDefinitions/{OWNER_ROLE_GUID}",
            principal_id=OWNER_PRINCIPAL,
        )
    )
    world.timing.lro_seconds = lro
    world.timing.fic_write_window_seconds = 0.02
    world.timing.job.queued_seconds = queued
    world.timing.job.running_seconds = running
    return world


def example(name: str, **spec_changes: Any) -> dict[str, Any]:
    """The spec of an example manifest (examples/NAME), with top-level fields changed."""
    spec: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())["spec"]
    spec.update(spec_changes)
    return spec


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        binaries = find_binaries(REPO)
    except ControlPlaneError as error:
        pytest.fail(str(error), pytrace=False)
    plane = ControlPlane(binaries, workdir=tmp_path_factory.mktemp("kube")).start()
    try:
        install_crds(config.new_client_from_config(str(plane.kubeconfig)), amlwire_crds())
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> client.ApiClient:
    """An admin client of the test apiserver."""
    return config.new_client_from_config(str(control_plane.kubeconfig))


@pytest.fixture(scope="session")
def custom(kube: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


def table(names: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> pytest.MarkDecorator:
    """A table test: one case per row, each named by its first column."""
    return pytest.mark.parametrize(names, rows, ids=[str(row[0]) for row in rows])


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll until predicate() is truthy; return its value, or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate!r}; last value: {last!r}")


@pytest.fixture(scope="session")
def kube_get(control_plane: ControlPlane) -> Callable[[str], Any]:
    """GET a raw apiserver path (discovery, OpenAPI) as admin, decoded from JSON."""
    import requests

    def get(path: str) -> Any:
        response = requests.get(
            control_plane.server + path,
            headers={"Authorization": f"Bearer {control_plane.admin_token}"},
            verify=str(control_plane.ca_file),
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    return get


def pytest_unconfigure(config: pytest.Config) -> None:
    """A handler thread still running now would hang interpreter exit (and CI) forever: fail loudly instead."""
    import os
    import sys
    import threading
    import traceback

    from amlwire.handlers.operator import WORKER_THREAD_PREFIX

    lingering = [t for t in threading.enumerate() if t.name.startswith(WORKER_THREAD_PREFIX) and t.is_alive()]
    if not lingering:
        return
    frames = sys._current_frames()
    for thread in lingering:
        print(f"\nleaked operator thread {thread.name}:", file=sys.stderr)
        traceback.print_stack(frames.get(thread.ident or 0), file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(3)


# -- every body the sandbox answers with fits the pinned SDKs' models (tests/contract.py) ---------------------
NOT_ARM = ("control.", "entra.", "sandbox.", "metadata.", "ml.discovery", "mlflow.")
_answers: dict[tuple[str, int, str], Any] = {}


def _remember(method: str, route: str, status: int, body: bytes) -> None:
    if route.startswith(NOT_ARM):
        return
    if route == "storage.blob":  # XML: one body per status and root element
        _answers.setdefault((route, status, body.split(b">", 2)[1][:40].decode(errors="replace")), body)
        return
    import json

    try:
        decoded = json.loads(body)
    except ValueError:
        _answers[(route, status, "not JSON")] = body[:200]
        return
    _answers.setdefault((route, status, _shape(decoded)), decoded)  # one body per shape keeps it small


def _shape(value: Any, prefix: str = "") -> str:
    if isinstance(value, dict):
        return ",".join(sorted(f"{prefix}{k}:{_shape(v, prefix + k + '.')}" for k, v in value.items()))
    if isinstance(value, list):
        return "[" + "|".join(sorted({_shape(v, prefix) for v in value})) + "]"
    return str(value)[:40] if prefix.endswith(("State.", "status.", "Type.", "type.")) else type(value).__name__


def pytest_configure(config: pytest.Config) -> None:
    from amlwire_sandbox.app import RESPONSE_OBSERVERS

    RESPONSE_OBSERVERS.append(_remember)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.contract import violations, xml_violations

    def check(route: str, status: int, body: Any) -> list[str]:
        return xml_violations(route, status, body) if route == "storage.blob" else violations(route, status, body)

    found = sorted({v for (route, status, _), body in _answers.items() for v in check(route, status, body)})
    if not found:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["", f"The sandbox answered {len(found)} time(s) unlike Azure's models (tests/contract.py):", *found[:60]]
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
