"""How every amlwire step inside an IsaacLab job ends: with the exit status that is the truth, loudly.

Shipped next to the step scripts (they import it from their own folder). Three rules, from Isaac Sim and the
reference repos (../shared/reference/field-truth.md, "Second reading — IsaacLab verdicts"):

- Never call `close()` before the status is decided: under Isaac Sim's fast shutdown (the default) `app.close()`
  ends the process with status 0 from inside `app.shutdown()`, so a failed step would read as a finished job.
  A step prints its traceback, writes its result, flushes, and leaves with `os._exit(status)`.
- A `threading.Timer` cannot rescue a hang in Kit: native code that holds the GIL keeps the timer's thread from
  running. The watchdog is a forked process: the step beats on a pipe while it makes progress, and after
  `grace` seconds without a beat the watchdog SIGKILLs the step's whole process group, saying why first.
- A watchdog that outlives its step would kill the next one: it leaves as soon as the step's end of the pipe
  closes (which `os._exit`, a crash or a kill all do).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

HANG_GRACE_SECONDS = 900.0  # Isaac Sim's first start compiles shaders for minutes; a step beats far more often


class StepFailed(Exception):
    """A failure the step can name: its reason is what the job reports (no traceback needed)."""


class Watchdog:
    """A forked process that kills this process group when the step stops beating for `grace` seconds."""

    def __init__(self, grace: float = HANG_GRACE_SECONDS, what: str = "the step") -> None:
        self.grace = grace
        self.what = what
        self.phase = "starting"
        read, self._write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the watchdog: never returns
            os.close(self._write)
            self._watch(read, os.getpgid(0))
        os.close(read)

    def beat(self, phase: str | None = None) -> None:
        """Progress: the watchdog's clock starts again (and names this phase if it must kill)."""
        self.phase = phase or self.phase
        message = self.phase.encode()[:200] + b"\n"
        with contextlib.suppress(OSError):  # the watchdog is gone: nothing left to tell
            os.write(self._write, message)

    def _watch(self, read: int, group: int) -> NoReturn:
        phase = b"starting"
        buffered = b""
        while True:
            ready, _, _ = select.select([read], [], [], self.grace)
            if not ready:
                sys.stderr.write(
                    f"amlwire: {self.what} made no progress for {self.grace:.0f} s (last: "
                    f"{phase.decode(errors='replace')}); a hang in native code that holds the GIL, as Kit's "
                    f"teardown can: killing the job's processes so the job fails instead of running to its timeout\n"
                )
                sys.stderr.flush()
                os.killpg(group, signal.SIGKILL)
                os._exit(1)
            chunk = os.read(read, 4096)
            if not chunk:  # the step ended, one way or another
                os._exit(0)
            buffered = (buffered + chunk)[-1024:]
            lines = [line for line in buffered.split(b"\n") if line]
            phase = lines[-1] if lines else phase


def write_result(path: str | None, result: dict[str, Any]) -> None:
    """The step's own account of how it ended (the job's outputs keep it)."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(result, indent=2, sort_keys=True))
    temporary.replace(target)


def leave(code: int) -> NoReturn:
    """Flush and leave with `code`: no atexit handlers, no Kit shutdown that could turn it into 0 or hang."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def run_step(
    name: str,
    body: Callable[[Watchdog], dict[str, Any]],
    result_file: str | None = None,
    grace: float = HANG_GRACE_SECONDS,
    on_failure: Callable[[str], None] | None = None,
) -> NoReturn:
    """Run one step under a watchdog and leave with the status that is the truth.

    `body` returns what the step found (written to `result_file` with outcome "succeeded"); StepFailed names
    a failure the user can fix; any other exception prints its traceback first. Either failure writes outcome
    "failed" with the reason, tells `on_failure` (best effort: the evaluator tags its MLflow run), prints
    `amlwire: <name> failed: <reason>` last (AML shows the end of the log) and leaves with status 1.
    """
    started = time.monotonic()
    watchdog = Watchdog(grace, name)
    try:
        found = body(watchdog)
    except StepFailed as failure:
        reason = str(failure)
    except SystemExit as stop:  # argparse and friends: their message is already printed
        if stop.code in (0, None):
            write_result(result_file, {"outcome": "succeeded", "step": name})
            leave(0)
        reason = str(stop.code) if not isinstance(stop.code, int) else f"stopped with status {stop.code}"
    except BaseException as error:
        traceback.print_exc()
        reason = f"{type(error).__name__}: {error}"
    else:
        write_result(result_file, {"outcome": "succeeded", "step": name, **found, "seconds": _since(started)})
        leave(0)
    write_result(result_file, {"outcome": "failed", "step": name, "reason": reason, "seconds": _since(started)})
    if on_failure is not None:
        with contextlib.suppress(Exception):
            on_failure(reason)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()  # what the step printed comes before its reason: AML shows the end of the log
    print(f"amlwire: {name} failed: {reason}", file=sys.stderr)
    leave(1)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
