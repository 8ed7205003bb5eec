"""`amlwire demo`: the whole thing on this machine: apiserver, Azure sandbox, operator, the examples."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import requests
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from amlwire.cli import development_tool
from amlwire.config import Settings

AS_TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
ROLE_PROPAGATION_SECONDS = 2  # the sandbox grants at once; the doctor command printed uses the same window
EXAMPLES = ("attachedcompute.yaml", "amljob-train.yaml", "amljob-validate.yaml", "amljob-command.yaml")


def printer_table(plane: Any, plural: str, title: str) -> tuple[Table, list[dict[str, str]]]:
    """The apiserver's own printer columns (what `kubectl get` shows) as a rich table, plus the rows."""
    response = requests.get(
        f"{plane.server}/apis/amlwire.io/v1alpha1/{plural}",
        headers={"Authorization": f"Bearer {plane.admin_token}", "Accept": AS_TABLE},
        verify=str(plane.ca_file),
        timeout=10,
    )
    response.raise_for_status()
    body = response.json()
    columns = [c["name"] for c in body["columnDefinitions"] if c.get("priority", 0) == 0]
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    rows = []
    for row in body.get("rows", []):
        cells = dict(zip([c["name"] for c in body["columnDefinitions"]], row["cells"], strict=False))
        rows.append({k: "<none>" if v is None else str(v) for k, v in cells.items()})
        table.add_row(*[rows[-1].get(c, "") for c in columns])
    return table, rows


def finished(computes: list[dict[str, str]], jobs: list[dict[str, str]], expected_jobs: int) -> bool:
    return (
        bool(computes)
        and all(c.get("Ready") == "True" for c in computes)
        and len(jobs) == expected_jobs
        and all(j.get("AML Status") in ("Completed", "Failed", "Canceled") for j in jobs)
    )


def succeeded(plane: Any) -> bool:
    _, computes = printer_table(plane, "attachedcomputes", "")
    _, jobs = printer_table(plane, "amljobs", "")
    return all(c.get("Ready") == "True" for c in computes) and all(
        j.get("AML Status") == "Completed" and j.get("Verdict") in ("<none>", "Passed") for j in jobs
    )


@click.command()
@click.option("--once", is_flag=True, help="Run to completion, print the outcome and exit (0: all went as expected).")
@click.option(
    "--world",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("examples/sandbox/world.yaml"),
    show_default=True,
    help="Sandbox world file.",
)
@click.option(
    "--examples",
    "examples_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("examples"),
    show_default=True,
    help="Folder of the example manifests to apply.",
)
@click.option("--timeout", default=180.0, show_default=True, help="Seconds --once waits before giving up.")
def demo(once: bool, world: Path, examples_dir: Path, timeout: float) -> None:
    """Run amlwire end to end on this machine: a real kube-apiserver, the Azure sandbox, the operator
    authenticating with workload identity, and the examples applied. Ctrl-C stops and cleans up."""
    with development_tool("demo"):
        from amlwire_devenv.controlplane import ControlPlane, find_binaries
        from amlwire_devenv.stack import LocalStack, kube_client, prepare_cluster
        from amlwire_sandbox.ports import free_port
        from amlwire_sandbox.world import World

    console = Console(width=max(140, Console().width))
    workdir = Path(tempfile.mkdtemp(prefix="amlwire-demo-"))
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    with console.status("starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler"):
        # a cluster's controllers too: a deleted namespace's AmlJobs are deleted (and their AML jobs canceled)
        plane = ControlPlane(find_binaries(), workdir=workdir / "kube", cluster=True).start()
    stack = None
    try:
        kube = kube_client(plane)
        prepare_cluster(kube)
        loaded = World.load(world)
        loaded.timing.lro_seconds = min(loaded.timing.lro_seconds, 0.5)
        stack = LocalStack(plane, loaded, workdir / "azure", kube)
        metrics_port = free_port()
        stack.start_operator(
            metrics_port=metrics_port,
            metrics_address="127.0.0.1",
            federation_propagation_seconds=1,
            role_propagation_seconds=ROLE_PROPAGATION_SECONDS,
            job_poll_interval=1,
            # what production honours: a 429's Retry-After up to the default cap, not the tests' 2 s
            max_retry_delay=Settings.model_fields["max_retry_delay"].default,
        )
        _where_to_look(console, plane, stack, metrics_port)
        applied = _apply_examples(kube, examples_dir)
        console.print(f"[bold]amlwire demo[/]: applied {', '.join(applied)}")
        expected_jobs = sum(1 for name in applied if name.startswith("amljob"))
        deadline = time.monotonic() + timeout
        diagnosed = False
        try:
            for computes, jobs in _watch(console, plane, stop):
                if not diagnosed and computes and all(c.get("Ready") == "True" for c in computes):
                    _diagnose(console, stack)  # the doctor's view as soon as the wiring is up
                    diagnosed = True
                if once and (finished(computes, jobs, expected_jobs) or time.monotonic() > deadline):
                    break
        except KeyboardInterrupt:
            if not diagnosed:
                _diagnose(console, stack)
            raise
        _diagnose(console, stack)  # and once more at the end: what the doctor says after the jobs ran
        if once:
            ok = succeeded(plane)
            console.print(
                "[bold green]demo finished: the compute is Ready and every job completed[/]"
                if ok
                else "[bold red]demo did not finish as expected (see the tables above)[/]"
            )
            raise SystemExit(0 if ok else 1)
        console.print("Running; Ctrl-C stops and cleans up.")
        while not stop["requested"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        if stack is not None:
            stack.close()
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # ~90 MB, and a kubeconfig with an admin token


def _watch(console: Console, plane: Any, stop: dict[str, bool]) -> Iterator[tuple[list[dict[str, str]], ...]]:
    """`kubectl get amlc` and `kubectl get amlj -A` as they change: a live view on a terminal, each change printed
    as it happens otherwise (a pipe or a CI log would see nothing until the end)."""
    last: tuple[list[dict[str, str]], ...] | None = None
    live = Live(console=console, refresh_per_second=4, transient=False) if console.is_terminal else None
    with live or contextlib.nullcontext():
        while not stop["requested"]:
            computes_table, computes = printer_table(plane, "attachedcomputes", "kubectl get amlc")
            jobs_table, jobs = printer_table(plane, "amljobs", "kubectl get amlj -A")
            if live is not None:
                live.update(Group(computes_table, jobs_table))
            elif (computes, jobs) != last:
                console.print(Group(computes_table, jobs_table))
            last = (computes, jobs)
            yield computes, jobs
            time.sleep(0.5)


def _apply_examples(kube: Any, folder: Path) -> list[str]:
    from amlwire.adapters.kube.client import custom_api

    custom = custom_api(kube)
    applied = []
    for name in EXAMPLES:
        manifest = yaml.safe_load((folder / name).read_text())
        if manifest["kind"] == "AttachedCompute":
            custom.create_cluster_custom_object("amlwire.io", "v1alpha1", "attachedcomputes", manifest)
        else:
            custom.create_namespaced_custom_object(
                "amlwire.io", "v1alpha1", manifest["metadata"]["namespace"], "amljobs", manifest
            )
        applied.append(name.removesuffix(".yaml"))
    return applied


def _diagnose(console: Console, stack: Any) -> None:
    """What `amlwire doctor robotics-gpu` says about the demo's compute."""
    from amlwire.adapters.kube.adapter import KubeAdapter
    from amlwire.api.attachedcompute import AttachedComputeSpec
    from amlwire.cli.doctor import attached_compute_heading, report_table
    from amlwire.domain.doctor import diagnose
    from amlwire.reconcile.doctor import gather

    kube = KubeAdapter(stack.kube)
    obj = kube.get_attached_compute("robotics-gpu")
    if obj is None:
        return
    spec = AttachedComputeSpec.model_validate(obj["spec"])
    facts = gather(
        spec,
        stack.operator.services.azure,
        kube,
        datetime.now(UTC),
        timedelta(seconds=ROLE_PROPAGATION_SECONDS),
        ("robotics-gpu", obj["metadata"]["uid"]),
    )
    report_table(console, diagnose(facts), attached_compute_heading(spec, "robotics-gpu"))


def _where_to_look(console: Console, plane: Any, stack: Any, metrics_port: int) -> None:
    env = " ".join(
        f"{k}={v}"
        for k, v in {
            **stack.azure_environment(),
            "AMLWIRE_ARM_ENDPOINT": stack.sandbox.base_url,
            "AMLWIRE_CA_BUNDLE": stack.sandbox.ca_file,
            "AMLWIRE_KUBECONFIG": plane.kubeconfig,
            "AMLWIRE_ROLE_PROPAGATION_SECONDS": ROLE_PROPAGATION_SECONDS,
        }.items()
    )
    kubectl = plane.bin_dir / "kubectl" if (plane.bin_dir / "kubectl").is_file() else "kubectl"
    amlwire = Path(sys.executable).with_name("amlwire")
    console.print(f"""[bold]Where to look[/] (while the demo runs)
  Kubernetes:  {kubectl} --kubeconfig {plane.kubeconfig} get amlc,amlj -A   (describe them for events)
  Metrics:     http://127.0.0.1:{metrics_port}/metrics
  Azure:       {stack.sandbox.base_url}/_sandbox/state  (calls: /_sandbox/calls, CA: {stack.sandbox.ca_file})
  Doctor:      {env} {amlwire} doctor robotics-gpu""")
