"""Job submission speed, polling cost and the operator's footprint, measured against the sandbox.

Prints, for two ARM latencies (0 ms: the sandbox answers at once, so everything is CPU-bound on this machine;
100 ms: about what Azure Resource Manager takes per call), the time to submit N AmlJobs against a sequential
loop over the raw SDK in the same run; ARM calls per poll interval with N and 2N jobs running; the operator's
RSS; and how long `amlwire run` takes to answer its liveness probe. The operator runs as its own
`amlwire run` process, configured by environment variables as in its pod.
Run: make bench, or .venv/bin/python -m bench.jobs [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import requests
from azure.ai.ml import MLClient, command
from azure.ai.ml.entities import Environment
from kubernetes import client
from rich.console import Console
from rich.table import Table

from amlwire_devenv.chaos import example
from amlwire_devenv.cluster import items_of
from amlwire_devenv.stack import spawn_operator
from amlwire_sandbox.ports import free_port
from bench.common import GROUP, VERSION, fast_world, is_ready, stack, start_plane, wait

POLL_INTERVAL = 2.0
LATENCIES = (0.0, 0.1)


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_sdk_submissions(ml: MLClient, prefix: str, count: int) -> float:
    """A sequential loop over azure-ai-ml: what a user's script does to submit `count` jobs."""
    started = time.monotonic()
    for index in range(count):
        job = command(
            name=f"{prefix}-{index}",
            command="echo ${{inputs.seed}}",
            compute="k8s-gpu",
            inputs={"seed": index},
            environment=Environment(image="nvcr.io/nvidia/isaac-lab:2.1.0"),
            experiment_name="bench",
        )
        job.resources = {"instance_type": "gpu-1"}
        ml.jobs.create_or_update(job)
    return time.monotonic() - started


def submit_aml_jobs(custom: client.CustomObjectsApi, local: Any, prefix: str, count: int) -> float:
    """Create `count` AmlJobs; seconds until the last one reached AML (from the sandbox's call log)."""
    template = example("amljob-command.yaml")
    mark = local.ctl.mark()
    started = time.time()
    for index in range(count):
        template["metadata"]["name"] = f"{prefix}-{index}"
        custom.create_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", template)
    # poll gently: a LIST of every AmlJob is work for the apiserver this bench shares the CPUs with
    wait(lambda: _count(custom, prefix, lambda s: bool(s.get("amlJobName"))) == count, 600, interval=1.0)
    puts = [c["time"] for c in local.ctl.calls(since=mark) if c["route"] == "ml.job" and c["method"] == "PUT"]
    return max(puts) - started


def _count(custom: client.CustomObjectsApi, prefix: str, test: Any) -> int:
    items = items_of(custom.list_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs"))
    return sum(1 for i in items if i["metadata"]["name"].startswith(prefix + "-") and test(i.get("status") or {}))


def poll_cost(local: Any) -> dict[str, float]:
    """ARM calls per poll interval, averaged over five intervals."""
    mark = local.ctl.mark()
    time.sleep(POLL_INTERVAL * 5)
    counts = local.ctl.counts(since=mark)
    return {k: v / 5 for k, v in counts.items() if not k.startswith("POST entra")}


def ml_client(local: Any) -> MLClient:
    base = local.sandbox.base_url
    return MLClient(
        local.credential(),
        local.subscription,
        "rg-ml",
        "mlw-robotics",
        cloud="BenchJobs",
        cloud_metadata={
            "azure_portal": "https://portal.azure.com/",
            "resource_manager": base + "/",
            "active_directory": base + "/",
            "aml_resource_id": base + "/",
            "storage_endpoint": "x",
            "registry_discovery_endpoint": base + "/",
        },
        connection_verify=str(local.sandbox.ca_file),
        enable_telemetry=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    console = Console()
    plane, kube = start_plane()
    custom = client.CustomObjectsApi(kube)
    world = fast_world()
    world.timing.job.queued_seconds = 1.0
    world.timing.job.running_seconds = 3600.0
    local = stack(plane, kube, world)
    os.chdir(local.workdir)  # azure-ai-ml runs `git` on every submission inside a work tree; neither side pays it
    logs = Path(tempfile.mkdtemp(prefix="amlwire-bench-logs-"))
    liveness = free_port()
    operator = spawn_operator(
        local,
        logs / "operator.log",
        job_poll_interval=POLL_INTERVAL,
        liveness_endpoint=f"http://127.0.0.1:{liveness}/healthz",
    )
    r: dict[str, Any] = {"runs": [], "polls": []}
    try:
        r["startup"] = wait(lambda: _alive(liveness), 60, interval=0.05)
        custom.create_cluster_custom_object(GROUP, VERSION, "attachedcomputes", example("attachedcompute.yaml"))
        wait(lambda: is_ready(custom, "robotics-gpu"), 60)
        ml = ml_client(local)
        for number, latency in enumerate(LATENCIES):
            local.ctl.clear_faults()
            if latency:
                local.ctl.add_fault(route="*", latency=latency, probability=1.0)
            raw = raw_sdk_submissions(ml, f"raw{number}", args.jobs)
            processes = {"operator": operator.pid, **{_program(p.args): p.pid for p in plane._procs}}
            before = {k: cpu_seconds(v) for k, v in processes.items()}
            profiler = _profile(operator.pid)
            seconds = submit_aml_jobs(custom, local, f"bench{number}", args.jobs)
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(30)
            cpu = {k: cpu_seconds(v) - before[k] for k, v in processes.items()}
            r["runs"].append({"latency": latency, "raw": raw, "amlwire": seconds, "cpu": cpu})
            local.ctl.clear_faults()
            wait(
                partial(_all_running, custom, f"bench{number}", args.jobs),
                300,
                1.0,
            )
            r["polls"].append((args.jobs * (number + 1), poll_cost(local)))
        r["rss"] = rss_mb(operator.pid)
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(60)
        local.close()
        plane.stop()
    report(console, args.jobs, r)


def _profile(pid: int) -> Any:
    """With AMLWIRE_BENCH_PROFILE=FILE (and py-spy on PATH), record the operator's CPU while it submits."""
    import shutil
    import subprocess

    target = os.environ.get("AMLWIRE_BENCH_PROFILE")
    spy = shutil.which("py-spy")
    if not target or not spy:
        return None
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--output",
            target,
            "--threads",
            "--nonblocking",
            "--gil",
            "--rate",
            "200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _alive(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def report(console: Console, count: int, r: dict[str, Any]) -> None:
    table = Table(title=f"{count} AmlJobs against the sandbox (`amlwire run` as its own process, 2 shared cores)")
    table.add_column("ARM latency per call")
    table.add_column("raw-SDK loop (s)", justify="right")
    table.add_column("amlwire (s)", justify="right")
    table.add_column("speed-up", justify="right")
    table.add_column("CPU s: operator / apiserver / etcd", justify="right")
    for run in r["runs"]:
        cpu = run["cpu"]
        table.add_row(
            f"{run['latency'] * 1000:.0f} ms",
            f"{run['raw']:.1f}",
            f"{run['amlwire']:.1f}",
            f"{run['raw'] / run['amlwire']:.2f}x",
            f"{cpu['operator']:.1f} / {cpu['kube-apiserver']:.1f} / {cpu['etcd']:.1f}",
        )
    console.print(table)
    polls = Table(title=f"ARM calls per poll interval ({POLL_INTERVAL:.0f} s)")
    polls.add_column("jobs running")
    polls.add_column("calls per interval", justify="right")
    polls.add_column("by route")
    for running, cost in r["polls"]:
        polls.add_row(
            str(running), f"{sum(cost.values()):.1f}", ", ".join(f"{k} {v:.1f}" for k, v in sorted(cost.items()))
        )
    console.print(polls)
    footprint = Table(title="footprint")
    footprint.add_column("measure")
    footprint.add_column("value", justify="right")
    footprint.add_row(
        f"operator RSS now / peak with {2 * count} AmlJobs (MiB)", f"{r['rss'][0]:.0f} / {r['rss'][1]:.0f}"
    )
    footprint.add_row("`amlwire run` start to liveness 200 (s)", f"{r['startup']:.2f}")
    console.print(footprint)


def _program(args: Any) -> str:
    """The program's name of a process started with `args` (a list or a string)."""
    first = args[0] if isinstance(args, list | tuple) else args
    return str(first).rsplit("/", 1)[-1]


def _all_running(custom: Any, prefix: str, jobs: int) -> bool:
    return _count(custom, prefix, lambda s: s.get("amlStatus") == "Running") == jobs


if __name__ == "__main__":
    main()
