"""`amlwire demo --once` runs headless to completion within three minutes and exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amlwire_devenv.stack import inherited_environment
from tests.conftest import REPO

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]


def test_demo_once_finishes_headless(tmp_path):
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "amlwire.cli.main", "demo", "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**inherited_environment(), "TERM": "dumb"},
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert elapsed < 180
    out = done.stdout
    assert "demo finished: the compute is Ready and every job completed" in out
    assert "robotics-gpu" in out
    assert "Passed" in out  # the validation job's verdict column
    assert "no failures" in out  # the doctor's verdict on the demo's compute
    assert "http://127.0.0.1:" in out  # metrics on loopback
    # where to look comes first, while the demo runs
    assert out.index("Where to look") < out.index("kubectl get amlc")
    # quiet: no kopf, Kubernetes-client or azure-ai-ml lines at default verbosity
    noise = [
        line
        for line in (out + done.stderr).splitlines()
        if any(
            marker in line
            for marker in ("kopf", "Request attempt", "OS signals", "tenant id", "experimental", "Connection pool")
        )
    ]
    assert noise == []
    # the work folder (an admin-token kubeconfig among ~90 MB) is gone
    kubeconfig = next(w for w in out.split() if w.endswith("kubeconfig") and "/" in w)
    assert not Path(kubeconfig).exists()


def test_demo_in_a_pipe_shows_each_change_and_the_doctor_also_on_ctrl_c(tmp_path):
    demo = subprocess.Popen(
        [sys.executable, "-m", "amlwire.cli.main", "demo"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**inherited_environment(), "TERM": "dumb"},
    )
    seen: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 150
        # tables as they change, while it runs: not only when it ends
        while sum("kubectl get amlc" in line for line in seen) < 2 and time.monotonic() < deadline:
            seen.append(demo.stdout.readline())
        assert sum("kubectl get amlc" in line for line in seen) >= 2, "".join(seen)[-3000:]
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    out = "".join(seen) + rest
    assert "robotics-gpu (aks-robotics → mlw-robotics)" in out  # the doctor's view of the compute
    assert "stopping" in out
    kubeconfig = next(w for w in out.split() if w.endswith("kubeconfig") and "/" in w)
    assert not Path(kubeconfig).exists()
