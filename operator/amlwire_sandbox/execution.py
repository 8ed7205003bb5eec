"""Running a job's command for real: what an AML job on Kubernetes compute does once its pod starts.

Jobs whose command uses IsaacLab (`./isaaclab.sh`, `isaaclab train`) run in a folder laid out as the IsaacLab
image is (`/workspace/isaaclab` and `/tmp` map into it), against the stand-ins in isaaclab_image/ (see its
README). As AML does: `${{inputs.X}}` and `${{outputs.X}}` become paths (inputs downloaded from the sandbox's
blob plane first), literal inputs their values; MLFLOW_TRACKING_URI is the workspace's; the exit status decides
Completed or Failed; outputs written with rw_mount reach storage whatever ends the job (rule ml.job-execution).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

IMAGE = Path(__file__).resolve().parent / "isaaclab_image"
ISAACLAB_ROOT = "/workspace/isaaclab"
BINDING = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z0-9_]+)\s*\}\}")
# a path at the start of a word: never inside a base64 payload, whose alphabet has '/' and letters
CONTAINER_PATHS = re.compile(r"(?<![A-Za-z0-9+/=])(/workspace/isaaclab|/tmp)(?=/|\b)")
LOG_TAIL_LINES = 20


def runs_isaaclab(command: str) -> bool:
    """Whether the command runs in the IsaacLab image the sandbox has (and so is executed)."""
    return "./isaaclab.sh" in command or re.search(r"(^|&& )isaaclab train\b", command) is not None


@functools.cache
def sim_module() -> ModuleType:
    """The image's simulator stand-in, for checkpoints the world seeds (one format, one place)."""
    name = "amlwire_sandbox_image_sim"
    spec = importlib.util.spec_from_file_location(name, IMAGE / "site" / "_sandbox_sim.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass
class Output:
    folder: Path
    mode: str  # rw_mount (written as it runs: kept whatever ends the job) or upload (only when it completes)


@dataclass
class Execution:
    """One job's process, its folder and what it logged."""

    root: Path
    process: subprocess.Popen[bytes]
    outputs: dict[str, Output] = field(default_factory=dict)
    killed: str | None = None  # why the sandbox ended it (canceled, timeout)

    @property
    def log_file(self) -> Path:
        return self.root / "user_logs" / "std_log.txt"

    def poll(self) -> int | None:
        return self.process.poll()

    def kill(self, why: str) -> None:
        if self.process.poll() is None:
            self.killed = why
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def tail(self) -> str:
        return "\n".join(self.log().splitlines()[-LOG_TAIL_LINES:])

    def logged(self) -> dict[str, dict[str, Any]]:
        """What the job logged to MLflow: metrics (last value wins), params, tags."""
        found: dict[str, dict[str, Any]] = {"metrics": {}, "params": {}, "tags": {}}
        path = self.root / "mlflow.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            record = json.loads(line)
            found[record["kind"]].update(record["values"])
        return found

    def files(self, output: str) -> dict[str, bytes]:
        folder = self.outputs[output].folder
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Executor:
    """Starts and ends job processes, each in its own folder under one temporary root."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="amlwire-sandbox-jobs-"))
        self.running: dict[str, Execution] = {}

    def start(
        self,
        job: str,
        command: str,
        environment: dict[str, str],
        literals: dict[str, str],
        inputs: dict[str, dict[str, bytes]],
        outputs: dict[str, str],
        models: dict[tuple[str, str], dict[str, bytes]],
        behaviour: dict[str, Any],
    ) -> Execution:
        """Lay out the container's filesystem, put the inputs in place and start the command."""
        root = self.root / f"{job.rsplit('/', 1)[-1]}-{hashlib.sha256(job.lower().encode()).hexdigest()[:8]}"
        shutil.rmtree(root, ignore_errors=True)
        image = root / "workspace" / "isaaclab"
        shutil.copytree(IMAGE, image, ignore=shutil.ignore_patterns("__pycache__"))
        for folder in ("tmp", "home", "wd", "installed", "user_logs", "inputs", "outputs", "models"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        paths: dict[tuple[str, str], str] = {}
        for name, files in inputs.items():
            paths[("inputs", name)] = str(_write_tree(root / "inputs" / name, files))
        for name in outputs:
            paths[("outputs", name)] = str(root / "outputs" / name)
            (root / "outputs" / name).mkdir(parents=True)
        for (model, version), files in models.items():
            _write_tree(root / "models" / model / version, files)

        def bind(match: re.Match[str]) -> str:
            kind, name = match.group(1), match.group(2)
            if kind == "inputs" and name in literals:
                return literals[name]
            return paths.get((kind, name), match.group(0))

        def container(text: str) -> str:
            return CONTAINER_PATHS.sub(lambda m: str(image if m.group(1) == ISAACLAB_ROOT else root / "tmp"), text)

        env = {
            "PATH": f"{image / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(root / "home"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": f"{root / 'installed'}:{image / 'site'}",
            "AMLWIRE_SANDBOX_PYTHON": sys.executable,
            "AMLWIRE_SANDBOX_ISAACLAB_ROOT": str(image),
            "AMLWIRE_SANDBOX_INSTALL": str(root / "installed"),
            "AMLWIRE_SANDBOX_MLFLOW": str(root / "mlflow.jsonl"),
            "AMLWIRE_SANDBOX_MODELS": str(root / "models"),
            "AMLWIRE_SANDBOX_ISAACSIM": json.dumps(behaviour),
            **{k: container(v) for k, v in environment.items()},
        }
        script = BINDING.sub(bind, container(command))  # bound paths are the host's already
        log = (root / "user_logs" / "std_log.txt").open("wb")
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=root / "wd",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a cancel (or a watchdog) ends all of it
        )
        log.close()
        execution = Execution(
            root, process, {name: Output(root / "outputs" / name, mode) for name, mode in outputs.items()}
        )
        self.running[job] = execution
        return execution

    def stop_all(self) -> None:
        for execution in self.running.values():
            execution.kill("the sandbox stopped")
        self.running.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _write_tree(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return folder


def exit_error(code: int, tail: str) -> dict[str, Any]:
    """How AML reports a job whose user process exited non-zero (rule ml.job-execution)."""
    status = f"status code {code}" if code >= 0 else f"signal {-code} ({signal.Signals(-code).name})"
    return {
        "code": "UserError",
        "message": f"Execution failed. User process '/bin/bash' exited with {status}. Please check log file "
        f"'user_logs/std_log.txt' for error details. Error: {tail}",
        "details": [],
    }


def duration_seconds(value: str | None) -> float | None:
    """An ISO 8601 duration as azure-ai-ml sends limits.timeout (PT2H, P1D, PT90S)."""
    found = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", value or "")
    if not found or not any(found.groups()):
        return None
    days, hours, minutes, seconds = (float(g or 0) for g in found.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds
