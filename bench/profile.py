"""Where an operator process spends its CPU: py-spy samples every thread of it (kopf's loop, the handler pool,
the job poller), and the samples are grouped by the part of the work they belong to.

Used by `bench/scale.py --profile FILE`; the raw samples (py-spy's collapsed stacks) stay in FILE for
flame graphs (e.g. speedscope, or inferno-flamegraph).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (part of the work, path fragments of its frames); a sample counts for the first part, from the leaf up, one of
# whose fragments is in a frame: the work that was running, not who asked for it.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("amlwire pacing and throttle", ("adapters/azure/pacing", "adapters/azure/throttle")),
    ("amlwire status rendering and Kubernetes writes", ("handlers/status", "reconcile/status", "adapters/kube/")),
    ("amlwire job poller", ("reconcile/poller",)),
    ("amlwire reconcile and domain", ("amlwire/reconcile/", "amlwire/domain/", "amlwire/api/")),
    ("azure-ai-ml: job construction and serialisation", ("azure/ai/ml/",)),
    ("Azure SDK pipeline and HTTP (azure-core, requests, TLS)", ("azure/core/", "requests/", "urllib3/", "ssl.py")),
    ("msrest / isodate / marshmallow (AML models)", ("msrest/", "isodate/", "marshmallow/")),
    ("Kubernetes client: apiserver patches, events, watches", ("kubernetes/", "aiohttp/")),
    ("kopf event handling", ("kopf/",)),
    ("pydantic models", ("pydantic",)),
    ("asyncio and threads", ("asyncio/", "threading.py", "concurrent/futures")),
)


class Profiler:
    """py-spy recording a process until stopped."""

    def __init__(self, pid: int, output: Path, rate: int = 97) -> None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(py_spy).exists():
            raise SystemExit(
                "--profile needs py-spy: .venv/bin/pip install py-spy (make installs it with the dev tools)"
            )
        self.output = output
        self.process = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                str(rate),
                "--output",
                str(output),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def breakdown(raw: Path) -> list[tuple[str, int, float]]:
    """(part, samples, share) from py-spy's collapsed stacks, largest first."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        counts[part_of(stack.split(";"))] += int(number)
    total = sum(counts.values()) or 1
    return [(part, n, n / total) for part, n in counts.most_common()]


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for part, fragments in PARTS:
            if any(fragment in frame for fragment in fragments):
                return part
    return "other"
