"""Child processes of the local stack that cannot outlive it."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A `preexec_fn`: the kernel kills the child when the thread that started it ends.

    etcd, kube-apiserver and operator processes run in their own session (so Ctrl-C reaches only the
    parent, which stops them in order); this keeps them from outliving a parent that is killed outright.
    Start such children from the main thread: a worker thread's exit would take them along.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn_logged(args: list[str], log_path: Path) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """A child in its own session that dies with this process, its output appended to `log_path`; the caller
    closes the log when the child is done."""
    log = log_path.open("ab")
    process = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    return process, log
