"""Reliability figures: SIGKILL campaigns and a fifth of ARM calls failing, against the sandbox.

Prints, for a seeded campaign of N iterations (half during wiring, half during job submission) in which
`amlwire run` is SIGKILLed a random number of ARM calls into the work and restarted: how many converged,
duplicate AML jobs, orphaned or duplicate FICs and role assignments, and the time to converge after the
restart. Then ARM calls per converged object for 3 AttachedComputes and 6 AmlJobs with 20% of ARM calls
failing (429 with Retry-After, 500, +0.4 s latency; and 20% of long-running operations failing), against the
same work without faults, and how many calls actually met each fault under the seed.
Run: make bench, or .venv/bin/python -m bench.chaos [--iterations N] [--seed S]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from amlwire_devenv.chaos import (
    CrashCampaign,
    Iteration,
    OperatorProcess,
    arm_calls,
    cloud_faults,
    example,
    is_true,
    stack_problems,
    wait_until,
)
from amlwire_devenv.cluster import as_object
from bench.common import GROUP, VERSION, delete_everything, stack, start_plane


def crash_campaign(plane: Any, kube: Any, iterations: int, seed: int) -> list[Iteration]:
    local = stack(plane, kube)
    local.ctl.timing(ficWriteWindowSeconds=0.05, job={"queuedSeconds": 0.2, "runningSeconds": 0.5})
    operator = OperatorProcess(local, Path(tempfile.mkdtemp(prefix="amlwire-chaos-")) / "operator.log")
    operator.start()
    try:
        campaign = CrashCampaign(local, operator, seed)
        campaign.apply_base()
        return campaign.run(wirings=iterations // 2, submissions=iterations - iterations // 2)
    finally:
        operator.stop()
        delete_everything(campaign.custom)
        local.close()


def job_of(custom: Any, name: str) -> dict[str, Any]:
    return as_object(custom.get_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", name))


def fault_run(plane: Any, kube: Any, faults: bool, seed: int) -> dict[str, Any]:
    """3 AttachedComputes and 6 AmlJobs to convergence; ARM calls and seconds, with or without faults."""
    from kubernetes import client

    custom = client.CustomObjectsApi(kube)
    local = stack(plane, kube)
    local.ctl.timing(ficWriteWindowSeconds=0.05, job={"queuedSeconds": 0.2, "runningSeconds": 0.5})
    local.start_operator()
    try:
        for fault in cloud_faults(seed) if faults else ():
            local.ctl.add_fault(**fault)
        mark, started = local.ctl.mark(), time.monotonic()
        names = []
        for index in range(3):
            item = example("attachedcompute.yaml")
            if index:
                item["metadata"]["name"] = f"fault-{index}"
                item["spec"]["cluster"]["name"] = local.add_cluster(f"aks-fault-{index}")
                item["spec"]["compute"]["name"] = f"gpu-fault-{index}"
            custom.create_cluster_custom_object(GROUP, VERSION, "attachedcomputes", item)
            names.append(item["metadata"]["name"])

        def compute(name: str) -> dict[str, Any]:
            return as_object(custom.get_cluster_custom_object(GROUP, VERSION, "attachedcomputes", name))

        wait_until(lambda: is_true(compute("robotics-gpu")), 120)
        jobs = []
        for index in range(6):
            job = example("amljob-validate.yaml")
            job["metadata"]["name"] = f"fault-job-{index}"
            custom.create_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", job)
            jobs.append(job["metadata"]["name"])

        def done() -> bool:
            statuses = [
                (
                    as_object(custom.get_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", j)).get(
                        "status"
                    )
                    or {}
                )
                for j in jobs
            ]
            return all(is_true(compute(n)) for n in names) and all(s.get("amlStatus") == "Completed" for s in statuses)

        converged = bool(wait_until(done, 180, interval=0.2))
        calls = arm_calls(local.ctl.calls(since=mark))
        base = compute("robotics-gpu")
        problems = stack_problems(
            local, base["spec"]["identity"]["resourceId"], base["status"]["identity"]["principalId"]
        )
        return {
            "converged": converged,
            "seconds": time.monotonic() - started,
            "calls": len(calls),
            "faulted": Counter(c["fault"] for c in calls if c["fault"]),
            "objects": len(names) + len(jobs),
            "problems": problems,
        }
    finally:
        local.stop_operator()
        delete_everything(custom)
        local.close()


def report(
    console: Console, seed: int, crashes: list[Iteration], clean: dict[str, Any], faulty: dict[str, Any]
) -> None:
    problems = [p for r in crashes for p in r.problems]
    converged = [r for r in crashes if r.converge_seconds != float("inf")]
    seconds = [r.converge_seconds for r in converged] or [float("nan")]
    table = Table(title=f"SIGKILL campaign, seed {seed}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "iterations (wiring / job submission)",
        f"{len(crashes)} ({sum(r.kind == 'wiring' for r in crashes)} / {sum(r.kind == 'submission' for r in crashes)})",
    )
    table.add_row("converged after restart", str(len(converged)))
    table.add_row(
        "duplicate AML jobs, FICs or role assignments",
        str(sum("duplicate" in p or "AML jobs carry" in p for p in problems)),
    )
    table.add_row("orphaned FICs or role assignments", str(sum("orphaned" in p for p in problems)))
    table.add_row(
        "other problems (missing, status untrue)",
        str(sum(not ("duplicate" in p or "orphaned" in p or "AML jobs carry" in p) for p in problems)),
    )
    table.add_row(
        "time to converge after restart: median / max (s)", f"{statistics.median(seconds):.2f} / {max(seconds):.2f}"
    )
    table.add_row(
        "ARM calls per object across a kill: median", f"{statistics.median(r.arm_calls for r in crashes):.0f}"
    )
    console.print(table)
    faults = Table(title="20% of ARM calls failing: 3 AttachedComputes + 6 AmlJobs")
    faults.add_column("measure")
    faults.add_column("with faults", justify="right")
    faults.add_column("without", justify="right")
    faults.add_column("ratio", justify="right")
    per_faulty, per_clean = faulty["calls"] / faulty["objects"], clean["calls"] / clean["objects"]
    faults.add_row("converged", str(faulty["converged"]), str(clean["converged"]), "")
    faults.add_row(
        "ARM calls per converged object", f"{per_faulty:.1f}", f"{per_clean:.1f}", f"{per_faulty / per_clean:.2f}x"
    )
    for kind in ("429", "500", "latency 0.4s", "lroFailed"):
        faults.add_row(f"ARM calls that met a fault: {kind}", str(faulty["faulted"][kind]), str(clean["faulted"][kind]))
    met = sum(faulty["faulted"].values())
    faults.add_row(
        "ARM calls that met a fault, all kinds",
        f"{met} of {faulty['calls']} ({met / faulty['calls']:.0%})",
        str(sum(clean["faulted"].values())),
    )
    faults.add_row(
        "time to converge (s)",
        f"{faulty['seconds']:.1f}",
        f"{clean['seconds']:.1f}",
        f"{faulty['seconds'] / clean['seconds']:.2f}x",
    )
    faults.add_row(
        "duplicates / orphans / untrue status", str(len(faulty["problems"])), str(len(clean["problems"])), ""
    )
    console.print(faults)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args()
    plane, kube = start_plane()
    try:
        crashes = crash_campaign(plane, kube, args.iterations, args.seed)
        clean = fault_run(plane, kube, faults=False, seed=args.seed)
        faulty = fault_run(plane, kube, faults=True, seed=args.seed)
    finally:
        plane.stop()
    report(Console(width=120), args.seed, crashes, clean, faulty)


if __name__ == "__main__":
    main()
