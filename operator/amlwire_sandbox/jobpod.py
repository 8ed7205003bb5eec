"""A `Command` job run as a pod on the compute's real node (rule ml.job-on-node), where its cluster has one.

The command runs in the compute's namespace as the job service account, on the node's local base image (there
is no registry: the job's own image is not pulled), with `${{inputs.X}}` literals bound and `${{outputs.X}}` and
`./outputs` on folders the sandbox reads when the pod ends, as AML's uploader would.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from amlwire_sandbox.execution import BINDING
from amlwire_sandbox.nodepods import core, create, delete_pod, node_pod

LABEL = "sandbox.amlwire.io/job"


@dataclass
class PodRun:
    namespace: str
    name: str
    folder: str  # on the node (this machine): outputs/ and named-outputs/<name>/

    def as_extra(self) -> dict[str, str]:
        return {"namespace": self.namespace, "name": self.name, "folder": self.folder}


def bind(command: str, literals: dict[str, str], outputs: list[str]) -> str:
    def bound(match: Any) -> str:
        kind, name = match.group(1), match.group(2)
        if kind == "inputs" and name in literals:
            return literals[name]
        if kind == "outputs" and name in outputs:
            return f"/job/named-outputs/{name}"
        return str(match.group(0))

    return str(BINDING.sub(bound, command))


def start(
    kubeconfig: str,
    job: str,
    namespace: str,
    service_account: str,
    image: str,
    command: str,
    environment: dict[str, str],
    outputs: list[str],
) -> PodRun:
    folder = Path(tempfile.mkdtemp(prefix=f"amlwire-jobpod-{job[:20]}-"))
    (folder / "outputs").mkdir()
    for name in outputs:
        (folder / "named-outputs" / name).mkdir(parents=True)
    name = f"job-{job.lower()[:50]}".rstrip("-")
    container = {
        "name": "job",
        "image": image,
        "command": ["/bin/bash", "-c", command],
        "workingDir": "/job",
        "env": [{"name": k, "value": v} for k, v in environment.items()],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "job", "mountPath": "/job"}],
    }
    volumes = [{"name": "job", "hostPath": {"path": str(folder), "type": "Directory"}}]
    pod = node_pod(name, {LABEL: job[:63]}, service_account, container, volumes)
    create(core(kubeconfig).create_namespaced_pod, namespace, pod)
    return PodRun(namespace, name, str(folder))


def state(kubeconfig: str, run: PodRun) -> tuple[str, int | None, str]:
    """(phase, exit code, the end of its log when it failed); phase "Gone" when the pod was deleted."""
    try:
        pod = core(kubeconfig).read_namespaced_pod(run.name, run.namespace, _request_timeout=5)
    except client.ApiException as error:
        if error.status == 404:
            return "Gone", None, "the job's pod was deleted"
        raise
    phase = str(pod.status.phase if pod.status else "Pending")
    for status in (pod.status.container_statuses or []) if pod.status else []:
        terminated = status.state.terminated if status.state else None
        if terminated is not None:
            return phase, int(terminated.exit_code), str(terminated.message or "").strip()[-2000:]
    return phase, None, ""


def files(run: PodRun, output: str | None) -> dict[str, bytes]:
    """What the command wrote: ./outputs (output None) or a named output's folder."""
    folder = Path(run.folder) / ("outputs" if output is None else f"named-outputs/{output}")
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def end(kubeconfig: str, run: PodRun) -> None:
    delete_pod(kubeconfig, run.namespace, run.name)
    shutil.rmtree(run.folder, ignore_errors=True)
