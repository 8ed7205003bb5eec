"""`amlwire run` as the chart runs the image: user 10001, the root filesystem read-only except /tmp (a private
mount namespace), HOME=/tmp. It wires a compute and runs a job; a write anywhere else would fail it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from amlwire_devenv.stack import operator_environment

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
USER = "10001"
# a private mount namespace: /tmp stays writable, everything else becomes read-only, then drop to the user
POD = (
    "mount --make-rprivate / && mount --bind /tmp /tmp && mount -o remount,bind,ro / && "
    f'exec setpriv --reuid {USER} --regid {USER} --clear-groups "$@"'
)


def _can_build_a_pod() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --make-rprivate /"], capture_output=True)
    return probe.returncode == 0


def _readable_copies(harness, folder: Path) -> dict[str, str]:
    """What the pod gets mounted (kubeconfig, the projected Azure token, the CA), readable by its user."""
    copies = {}
    for name, source in (
        ("AZURE_FEDERATED_TOKEN_FILE", harness.token_file),
        ("AMLWIRE_CA_BUNDLE", harness.sandbox.ca_file),
        ("KUBE_CA", harness.plane.ca_file),
    ):
        target = folder / f"{name.lower()}-{Path(source).name}"
        shutil.copyfile(source, target)
        target.chmod(0o644)
        copies[name] = str(target)
    kubeconfig = yaml.safe_load(Path(harness.plane.kubeconfig).read_text())
    kubeconfig["clusters"][0]["cluster"]["certificate-authority"] = copies.pop("KUBE_CA")
    target = folder / "kubeconfig"
    target.write_text(yaml.safe_dump(kubeconfig))
    target.chmod(0o644)
    copies["AMLWIRE_KUBECONFIG"] = str(target)
    return copies


@pytest.mark.skipif(not _can_build_a_pod(), reason="needs root and unshare/setpriv to build a private mount namespace")
def test_the_operator_runs_as_in_its_pod(harness):
    folder = Path(tempfile.mkdtemp(prefix="amlwire-pod-", dir="/tmp"))
    folder.chmod(0o755)
    environment = {**operator_environment(harness), **_readable_copies(harness, folder)}
    environment.update(HOME="/tmp", PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX="/tmp/pycache")
    log = folder / "operator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", POD, "pod", sys.executable, "-m", "amlwire.cli.main", "run"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd="/tmp",
            start_new_session=True,
        )
    try:
        compute = harness.apply_compute("robotics-gpu")
        harness.wait_ready(compute, timeout=90)
        job = harness.apply_job("amljob-train.yaml")
        harness.wait_job(job, timeout=90)
        assert process.poll() is None, log.read_text()[-3000:]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
    text = log.read_text()
    for refusal in ("Read-only file system", "Permission denied", "Traceback"):
        assert refusal not in text, text[-3000:]
    shutil.rmtree(folder, ignore_errors=True)
