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

# (part of the work, fragments of its frames' file names as py-spy prints them, relative to their package
# roots: "(ml/" is azure.ai.ml, "(core/" azure.core); a sample counts for the first part, from the leaf up, one of
# whose fragments is in a frame: the work that was running, not who asked for it.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("amlwire pacing and throttle", ("adapters/azure/pacing", "adapters/azure/throttle")),
    ("amlwire status rendering and Kubernetes writes", ("handlers/status", "reconcile/status", "adapters/kube/")),
    ("amlwire job poller", ("reconcile/poller",)),
    ("amlwire reconcile and domain", ("(amlwire/",)),
    ("azure-ai-ml: job construction and serialisation", ("(ml/",)),
    ("Azure SDK pipeline (azure-core, azure-identity, msal)", ("(core/", "(identity/", "(msal/", "(jwt/")),
    (
        "HTTP and TLS (requests, urllib3, http.client, ssl)",
        ("(requests/", "(urllib3/", "(http/", "(ssl.py", "(socket.py"),
    ),
    ("msrest / isodate / marshmallow (AML models)", ("(msrest/", "(isodate/", "(marshmallow/")),
    ("Kubernetes client: apiserver patches, events, watches", ("(kubernetes/", "(aiohttp/")),
    ("kopf event handling", ("(kopf/",)),
    ("pydantic models", ("(pydantic",)),
    ("asyncio and threads", ("(asyncio/", "(threading.py", "(concurrent/", "(queue.py")),
    ("json, copy, logging (stdlib)", ("(json/", "(copy.py", "(logging/")),
)
# A sample whose leaf is one of these is a thread waiting (for I/O, a lock or work), which py-spy does not always
# tell from running: it is counted apart, not as CPU.
WAITING = (
    "EpollSelector.select",
    "Condition.wait",
    "Event.wait",
    "SSLSocket.read",
    "socket.recv",
    "_worker (concurrent/futures/thread.py",
    "sleep",
)
BLOCKED = "waiting: I/O, locks, an idle pool (not CPU)"


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
                "--gil",  # only the thread holding the GIL: Python's CPU, not threads waiting on I/O or locks
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
    """(part, samples, share of the running samples) from py-spy's collapsed stacks, largest first; the waiting
    samples last, with no share."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        counts[part_of(stack.split(";"))] += int(number)
    waiting = counts.pop(BLOCKED, 0)
    running = sum(counts.values()) or 1
    return [(part, n, n / running) for part, n in counts.most_common()] + [(BLOCKED, waiting, 0.0)]


def part_of(frames: list[str]) -> str:
    if frames and any(frames[-1].startswith(leaf) for leaf in WAITING):
        return BLOCKED
    for frame in reversed(frames):
        for part, fragments in PARTS:
            if any(fragment in frame for fragment in fragments):
                return part
    return "other"
