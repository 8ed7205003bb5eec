"""1,000 AmlJobs at once on 5 computes in 2 workspaces, inside ARM's documented request budget.

ARM refills a principal's write bucket at 10 tokens a second after a burst of 200 (Learn, "Understand how Azure
Resource Manager throttles requests"); the sandbox enforces that budget here. With one write per job, 1,000 jobs
cannot be submitted faster than (1000 - 200) / 10 = 80 s: that is the limit this bench compares with. It prints
the time until every job is submitted (ratio to the limit), the 429s Azure answered, ARM reads and writes per
job, ARM reads per second while all 1,000 run (against the job poller's share of the read refill), the
operator's CPU seconds and peak RSS, and apiserver writes per AmlJob from create to Completed.
Not part of `make test` (about six minutes). Run: make bench-scale, or .venv/bin/python -m bench.scale
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from rich.console import Console
from rich.table import Table

from amlwire.config import Settings
from amlwire_devenv.chaos import example
from amlwire_devenv.cluster import items_of
from amlwire_sandbox.world import ArmLimits, BucketLimit, WorkspaceWorld
from bench.common import GROUP, VERSION, delete_everything, fast_world, is_ready, stack, start_plane, wait
from bench.jobs import cpu_seconds, rss_mb
from bench.profile import Profiler, breakdown

COMPUTES = (("mlw-robotics", 3), ("mlw-sim", 2))  # (workspace, computes in it)
POLL_INTERVAL = 2.0  # the operator's base poll interval: the read budget, not this, sets the real one
RUNNING_SECONDS = 170.0  # long enough for every job to run at once after the last submission
SANDBOX_READ_TIMEOUT = 600.0  # the sandbox's call log and job list hold every job: slow to answer at 10,000


def world(scale: float = 1.0, running_seconds: float = RUNNING_SECONDS) -> Any:
    """The documented ARM budget (times `scale`, for a run of many jobs that stays short), two workspaces."""
    w = fast_world()
    documented = ArmLimits()
    w.arm_limits = ArmLimits(
        reads=scaled(documented.reads, scale),
        writes=scaled(documented.writes, scale),
        deletes=scaled(documented.deletes, scale),
    )
    w.workspaces.append(WorkspaceWorld(resource_group="rg-ml", name="mlw-sim", storage_account="stmlrobotics"))
    w.timing.job.queued_seconds = 1.0
    w.timing.job.running_seconds = running_seconds
    return w


def scaled(limit: BucketLimit, scale: float) -> BucketLimit:
    return BucketLimit(size=limit.size * scale, refill=limit.refill * scale)


def budget_settings(scale: float) -> dict[str, str]:
    """The operator told the same budget as the sandbox enforces (SIZE/REFILL per operation type)."""
    documented = ArmLimits()
    return {
        f"arm_{kind}_budget": f"{limit.size * scale:g}/{limit.refill * scale:g}"
        for kind, limit in (("read", documented.reads), ("write", documented.writes), ("delete", documented.deletes))
    }


def compute_manifest(index: int, cluster: str, workspace: str) -> dict[str, Any]:
    item = example("attachedcompute.yaml")
    item["metadata"]["name"] = f"scale-{index}"
    item["spec"]["cluster"]["name"] = cluster
    item["spec"]["workspace"]["name"] = workspace
    item["spec"]["compute"]["name"] = f"gpu-{index}"
    for grant in item["spec"]["access"]["grants"]:
        grant["scope"] = grant["scope"].replace("workspaces/mlw-robotics", f"workspaces/{workspace}")
    return item


class ApiserverWrites:
    """Counts writes to each AmlJob (every MODIFIED a watch sees) from the bench's own create on."""

    def __init__(self, custom: client.CustomObjectsApi, prefix: str) -> None:
        self.custom, self.prefix = custom, prefix
        self.modified: Counter[str] = Counter()
        self.restarts = 0
        self._stopped = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ApiserverWrites:
        self._thread.start()
        time.sleep(0.5)
        return self

    def _run(self) -> None:
        version = ""
        while not self._stopped.is_set():  # the apiserver ends watches now and then: go on where it left off
            try:
                stream = self._watch.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    "robotics",
                    "amljobs",
                    resource_version=version,
                    timeout_seconds=300,
                )
                for event in stream:
                    version = event["object"]["metadata"]["resourceVersion"]
                    name = event["object"]["metadata"]["name"]
                    if event["type"] == "MODIFIED" and name.startswith(self.prefix):
                        self.modified[name] += 1
            except Exception as error:  # the apiserver goes away when the bench ends, or the version is too old
                self.restarts += 1
                version = "" if "410" in str(error) else version
                time.sleep(0.2)

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()


def events_per_job(core: client.CoreV1Api, prefix: str) -> Counter[str]:
    """Event writes per AmlJob: each Event's first write and every count increment after it."""
    counted: Counter[str] = Counter()
    for event in core.list_namespaced_event("robotics").items:
        name = event.involved_object.name or ""
        if event.involved_object.kind == "AmlJob" and name.startswith(prefix):
            counted[name] += event.count or 1
    return counted


def create_jobs(custom: client.CustomObjectsApi, prefix: str, count: int, computes: list[str]) -> None:
    """`count` AmlJobs at once (eight clients in parallel), spread evenly over the computes."""

    def create(index: int) -> None:
        item = example("amljob-command.yaml")
        item["metadata"]["name"] = f"{prefix}-{index}"
        item["spec"]["computeRef"] = computes[index % len(computes)]
        custom.create_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", item)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))


def count_jobs(custom: client.CustomObjectsApi, prefix: str, test: Any) -> int:
    items = items_of(custom.list_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs"))
    return sum(1 for i in items if i["metadata"]["name"].startswith(prefix) and test(i.get("status") or {}))


def arm_only(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in calls if c["path"].lower().startswith("/subscriptions/")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument(
        "--arm-scale",
        type=float,
        default=1.0,
        help="ARM's documented budget times this, in the sandbox and the operator alike (10,000 jobs: 10)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="once every job is submitted, stop the operator and start another; time until it has caught up",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="FILE", help="sample the operator with py-spy from create to Completed"
    )
    args = parser.parse_args()
    console, prefix = Console(), "scale"
    plane, kube = start_plane()
    custom, core = client.CustomObjectsApi(kube), client.CoreV1Api(kube)
    running_seconds = max(RUNNING_SECONDS, 0.04 * args.jobs)  # longer than submitting them all takes
    local = stack(plane, kube, world(args.arm_scale, running_seconds))
    os.chdir(local.workdir)
    logs = Path(tempfile.mkdtemp(prefix="amlwire-bench-logs-"))
    from amlwire_devenv.stack import spawn_operator

    settings = {"job_poll_interval": POLL_INTERVAL, **budget_settings(args.arm_scale)}
    operator = spawn_operator(local, logs / "operator.log", **settings)
    r: dict[str, Any] = {"jobs": args.jobs, "scale": args.arm_scale}
    writes: ApiserverWrites | None = None
    profiler: Profiler | None = None
    try:
        computes = []
        for index in range(sum(n for _, n in COMPUTES)):
            workspace = COMPUTES[0][0] if index < COMPUTES[0][1] else COMPUTES[1][0]
            manifest = compute_manifest(index, local.add_cluster(f"aks-{index}"), workspace)
            custom.create_cluster_custom_object(GROUP, VERSION, "attachedcomputes", manifest)
            computes.append(manifest["metadata"]["name"])
        wait(lambda: all(is_ready(custom, n) for n in computes), 180, interval=0.5)
        time.sleep(25)  # the write bucket refills (the wiring spent some of it): the run starts from a full one
        writes = ApiserverWrites(custom, prefix).start()
        if args.profile:
            profiler = Profiler(operator.pid, args.profile.resolve())
        cpu_before, mark, started = cpu_seconds(operator.pid), local.ctl.mark(), time.time()
        create_jobs(custom, prefix, args.jobs, computes)
        r["created"] = time.time() - started
        wait(lambda: count_jobs(custom, prefix, lambda s: bool(s.get("amlJobName"))) == args.jobs, 900, 2.0)
        submitted = arm_only(local.ctl.calls(since=mark, timeout=SANDBOX_READ_TIMEOUT))
        puts = [c["time"] for c in submitted if c["route"] == "ml.job" and c["method"] == "PUT" and c["status"] < 300]
        r["submitted"] = max(puts) - started
        r["job_puts"] = len(puts)
        r["cores_submitting"] = (cpu_seconds(operator.pid) - cpu_before) / (time.time() - started)
        if args.restart:  # the CPU counted is both processes': the first one's until it stops, all the new one's
            cpu_before -= cpu_seconds(operator.pid)
            operator = restart(operator, local, logs, settings, custom, prefix, r)
        # every job runs now (the last started a moment ago, the first ends RUNNING_SECONDS after it began)
        window_mark, window_cpu = local.ctl.mark(), cpu_seconds(operator.pid)
        time.sleep(30)
        r["cores_following"] = (cpu_seconds(operator.pid) - window_cpu) / 30
        window = arm_only(local.ctl.calls(since=window_mark, timeout=SANDBOX_READ_TIMEOUT))
        r["running_reads_per_second"] = sum(1 for c in window if c["method"] == "GET") / 30
        r["running_while"] = count_jobs(custom, prefix, lambda s: s.get("amlStatus") == "Running")
        wait(lambda: count_jobs(custom, prefix, lambda s: s.get("amlStatus") == "Completed") == args.jobs, 900, 3.0)
        time.sleep(2)
        calls = arm_only(local.ctl.calls(since=mark, timeout=SANDBOX_READ_TIMEOUT))
        r["cpu"] = cpu_seconds(operator.pid) - cpu_before
        if profiler is not None:
            profiler.stop()
            r["profile"] = breakdown(profiler.output)
        r["rss"] = rss_mb(operator.pid)
        idle_cpu = cpu_seconds(operator.pid)
        time.sleep(20)
        r["cores_idle"] = (cpu_seconds(operator.pid) - idle_cpu) / 20
        r["arm_calls"] = len(calls)
        r["429s"] = sum(1 for c in calls if c["status"] == 429)
        r["writes"] = sum(1 for c in calls if c["method"] in ("PUT", "PATCH", "POST", "DELETE"))
        r["reads"] = sum(1 for c in calls if c["method"] == "GET")
        writes.stop()
        r["patches"] = sum(writes.modified.values()) / args.jobs
        r["events"] = sum(events_per_job(core, prefix).values()) / args.jobs
        r["watch_restarts"] = writes.restarts
        delete_everything(custom)
    finally:
        if profiler is not None and profiler.process.poll() is None:
            profiler.stop()
        if writes is not None:
            writes.stop()
        operator.send_signal(signal.SIGTERM)
        operator.wait(60)
        local.close()
        plane.stop()
    report(console, r)


def restart(
    operator: Any,
    local: Any,
    logs: Path,
    settings: dict[str, Any],
    custom: client.CustomObjectsApi,
    prefix: str,
    r: dict[str, Any],
) -> Any:
    """Stop the operator with every job in flight, have AML end them all meanwhile (the most a restart can
    miss), start another: the time until it follows again (its first job listing) and until Kubernetes shows
    every job's end, and what it asked of ARM on the way."""
    from amlwire_devenv.stack import spawn_operator

    operator.send_signal(signal.SIGTERM)
    operator.wait(60)
    jobs = local.ctl.jobs(timeout=SANDBOX_READ_TIMEOUT)
    in_flight = [j for j in jobs if j["status"] not in ("Completed", "Failed", "Canceled")]
    r["restart_in_flight"] = len(in_flight)
    for job in in_flight:  # AML ends them while no operator runs
        local.ctl.patch(job["id"], extra={"running": 0.0})
    ended = {j["name"] for j in in_flight}
    mark, started = local.ctl.mark(), time.time()
    fresh = spawn_operator(local, logs / "operator-2.log", **settings)

    def listing() -> bool:
        return any(c["route"] == "ml.job.list" for c in local.ctl.calls(since=mark, timeout=SANDBOX_READ_TIMEOUT))

    def caught_up() -> bool:
        shown = items_of(custom.list_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs"))
        done = {(i.get("status") or {}).get("amlJobName") for i in shown if (i.get("status") or {}).get("endTime")}
        return ended <= done

    wait(listing, 600, 0.2)
    following = time.time() - started
    wait(caught_up, 1800, 1.0)
    seconds = time.time() - started
    calls = arm_only(local.ctl.calls(since=mark, timeout=SANDBOX_READ_TIMEOUT))
    r["restart"] = {
        "following": following,
        "caught_up": seconds,
        "writes": sum(1 for c in calls if c["method"] in ("PUT", "PATCH", "POST", "DELETE")),
        "reads": sum(1 for c in calls if c["method"] == "GET"),
        "429s": sum(1 for c in calls if c["status"] == 429),
    }
    return fresh


def report(console: Console, r: dict[str, Any]) -> None:
    settings = Settings.model_validate(budget_settings(r["scale"]))
    (write_size, write_refill), (_, read_refill) = settings.arm_budget()["writes"], settings.arm_budget()["reads"]
    jobs = r["jobs"]
    limit = max(0.0, jobs - write_size) / write_refill
    share = settings.job_poll_read_rate
    budget = "ARM's documented budget" + (f" x {r['scale']:g}" if r["scale"] != 1 else "")
    table = Table(title=f"{jobs} AmlJobs at once on 5 computes in 2 workspaces, {budget} enforced")
    table.add_column("measure")
    table.add_column("amlwire", justify="right")
    table.add_column("bucket arithmetic", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row(
        "time until every job is submitted (s)",
        f"{r['submitted']:.1f}",
        f"{limit:.1f} = ({jobs} - {write_size:g}) / {write_refill:g}",
        f"{r['submitted'] / limit:.2f}x" if limit else "-",
    )
    table.add_row("  of which creating the AmlJobs in the apiserver (s)", f"{r['created']:.1f}", "", "")
    table.add_row(
        "ARM requests answered 429", f"{r['429s']} of {r['arm_calls']}", "0", f"{100 * r['429s'] / r['arm_calls']:.2f}%"
    )
    table.add_row("job PUTs (one per job)", str(r["job_puts"]), str(jobs), f"{r['job_puts'] / jobs:.2f}x")
    table.add_row("ARM writes per job, create to Completed", f"{r['writes'] / jobs:.2f}", "1", "")
    table.add_row("ARM reads per job, create to Completed", f"{r['reads'] / jobs:.2f}", "", "")
    table.add_row(
        f"ARM reads per second while {r['running_while']} run",
        f"{r['running_reads_per_second']:.2f}",
        f"{share:g} (20% of {read_refill:g}/s)",
        f"{r['running_reads_per_second'] / share:.2f}x",
    )
    table.add_row(
        f"  = reads per poll interval ({POLL_INTERVAL:g} s base)",
        f"{r['running_reads_per_second'] * POLL_INTERVAL:.1f}",
        "",
        "",
    )
    table.add_row("operator CPU seconds, create to Completed", f"{r['cpu']:.1f}", "", "")
    table.add_row(
        f"operator RSS now / peak with {jobs} AmlJobs (MiB)", f"{r['rss'][0]:.0f} / {r['rss'][1]:.0f}", "", ""
    )
    table.add_row(
        "apiserver writes per AmlJob: patches + events", f"{r['patches']:.2f} + {r['events']:.2f}", "7 before", ""
    )
    table.add_row("  (the counting watch was resumed this many times)", str(r["watch_restarts"]), "", "")
    table.add_row("operator CPU per AmlJob (ms)", f"{1000 * r['cpu'] / jobs:.1f}", "", "")
    console.print(table)
    if "restart" in r:
        console.print(restart_table(r, read_refill))
    console.print(sizing(r))
    if "profile" in r:
        parts = Table(title="where the operator's CPU goes (py-spy samples, all threads, leaf-most part)")
        parts.add_column("part of the work")
        parts.add_column("samples", justify="right")
        parts.add_column("share", justify="right")
        parts.add_column("ms per job", justify="right")
        for part, samples, share in r["profile"]:
            parts.add_row(part, str(samples), f"{100 * share:.1f}%", f"{1000 * r['cpu'] * share / jobs:.1f}")
        console.print(parts)


def restart_table(r: dict[str, Any], read_refill: float) -> Table:
    restarted = r["restart"]
    table = Table(title=f"a restart of the operator with {r['restart_in_flight']} AmlJobs in flight")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("goal", justify="right")
    table.add_row("new operator: start until it follows the jobs again (s)", f"{restarted['following']:.1f}", "<= 30")
    table.add_row(
        f"  until Kubernetes shows the end of all {r['restart_in_flight']} (AML ended them while it was down) (s)",
        f"{restarted['caught_up']:.1f}",
        "",
    )
    table.add_row("ARM writes by the new operator meanwhile", str(restarted["writes"]), "0")
    per_second = restarted["reads"] / restarted["caught_up"]
    table.add_row(
        "ARM reads by it meanwhile (per second)", f"{restarted['reads']} ({per_second:.1f})", f"<= {read_refill:g}/s"
    )
    table.add_row("ARM answers 429 meanwhile", str(restarted["429s"]), "0")
    return table


def sizing(r: dict[str, Any]) -> Table:
    """The pod's requests this workload calls for: CPU while it follows the jobs (what it uses most of the time;
    a submission burst borrows more, unthrottled without a CPU limit) and memory at its peak, with headroom."""
    cpu_request = max(50, 50 * math.ceil(1000 * r["cores_following"] / 50))
    memory_request = 64 * math.ceil(r["rss"][1] * 1.1 / 64)
    table = Table(title=f"sizing the operator pod for {r['jobs']} AmlJobs in flight")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("CPU while submitting at ARM's write budget (cores)", f"{r['cores_submitting']:.2f}")
    table.add_row(f"CPU while following {r['jobs']} running jobs (cores)", f"{r['cores_following']:.2f}")
    table.add_row("CPU with every job ended (cores)", f"{r['cores_idle']:.3f}")
    table.add_row("peak RSS (MiB)", f"{r['rss'][1]:.0f}")
    table.add_row("resources.requests this calls for", f"cpu: {cpu_request}m, memory: {memory_request}Mi")
    table.add_row("resources.limits.memory this calls for (2x the request)", f"{2 * memory_request}Mi")
    return table


if __name__ == "__main__":
    main()
