"""A real node beside the local control plane: containerd and a kubelet on loopback (the node tier, tests/node).

Recipe tried on the CI machine: ../shared/reference/real-node.md. There is no registry: the base image is a
Debian 12 root made by debootstrap, the pause image and amlwire's image are built on it with podman and
imported into containerd; pods use `imagePullPolicy: Never` and the host network, so nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from amlwire_devenv.controlplane import ControlPlane
from amlwire_devenv.process import spawn_logged
from amlwire_sandbox.ports import free_port

HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "podman", "debootstrap")
NODE_BINARIES = ("kubelet", "kube-controller-manager", "kube-scheduler")
BASE_IMAGE = "localhost/amlwire-base:bookworm"
PAUSE_IMAGE = "localhost/pause:1"
OPERATOR_REPOSITORY = "localhost/amlwire"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# podman here cannot raise limits (no CAP_SYS_RESOURCE): containers get these instead of the host's
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


class NodeError(RuntimeError):
    """The node could not start or an image could not be built."""


def node_tier_missing(bin_dir: Path) -> str | None:
    """Why the node tier cannot run here, naming the command that fixes it; None when it can."""
    if os.geteuid() != 0:
        return "the node tier needs root (containerd and the kubelet run pods): run the tests as root, as CI does"
    absent = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if absent:
        return f"the node tier needs {', '.join(absent)}: run 'sudo hack/node-deps.sh'"
    unbuilt = [name for name in NODE_BINARIES if not (bin_dir / name).is_file()]
    if unbuilt:
        return f"the node tier needs {', '.join(unbuilt)} built: run 'make testenv'"
    return None


def _run(*args: str, timeout: float = 900, **kwargs: object) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise NodeError(f"{' '.join(args[:4])} ... exited {done.returncode}:\n{done.stderr[-3000:]}")
    return str(done.stdout)


@dataclass
class Images:
    """The images the node runs, built once and cached as archives under `cache` (gitignored), keyed by what
    they are built from."""

    cache: Path
    timings: dict[str, float] = field(default_factory=dict)

    def podman(self, *args: str, timeout: float = 900) -> str:
        storage = ("--root", str(self.cache / "podman" / "root"), "--runroot", str(self.cache / "podman" / "run"))
        return _run("podman", *storage, "--storage-driver", "vfs", *args, timeout=timeout)

    def _has(self, image: str) -> bool:
        return bool(self.podman("images", "-q", image).strip())

    def base(self) -> str:
        """Debian 12 (minbase) with Python 3.11 and venv: debootstrap once, then `podman import`."""
        archive = self.cache / "debian-bookworm-py311.tar"
        if not archive.is_file():
            started = time.monotonic()
            root = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=self.cache))
            try:
                _run(
                    "debootstrap",
                    "--variant=minbase",
                    "--include=python3,python3-venv",
                    "bookworm",
                    str(root),
                    DEBIAN_MIRROR,
                    timeout=1200,
                )
                _run("tar", "-C", str(root), "-cf", f"{archive}.part", ".")
                Path(f"{archive}.part").rename(archive)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            self.timings["debootstrap"] = time.monotonic() - started
        if not self._has(BASE_IMAGE):
            self.podman("import", str(archive), BASE_IMAGE)
        return BASE_IMAGE

    def base_archive(self) -> Path:
        """The base image as an archive for the node: what the sandbox runs job-side pods on."""
        archive = self.cache / "amlwire-base-bookworm.tar"
        if not archive.is_file():
            self._save(self.base(), archive)
        return archive

    def pause(self) -> Path:
        """The pod sandbox image: the kubelet's pause, as a process that sleeps until killed."""
        archive = self.cache / "pause-1.tar"
        if not archive.is_file():
            context = Path(tempfile.mkdtemp(prefix="pause-", dir=self.cache))
            (context / "Containerfile").write_text(f'FROM {self.base()}\nENTRYPOINT ["/bin/sleep", "infinity"]\n')
            self.podman("build", *ULIMITS, "-t", PAUSE_IMAGE, str(context))
            self._save(PAUSE_IMAGE, archive)
            shutil.rmtree(context, ignore_errors=True)
        return archive

    def operator(self, repo: Path, python: Path) -> tuple[str, Path]:
        """amlwire's image from the repository's Dockerfile on the local base, its wheels built by the host's
        pip (the image build needs no index): (image reference, archive)."""
        tag = _source_digest(repo)
        image, archive = f"{OPERATOR_REPOSITORY}:{tag}", self.cache / f"amlwire-{tag}.tar"
        if archive.is_file():
            return image, archive
        started = time.monotonic()
        wheels = self.cache / "wheels"
        constraints = str(repo / "constraints.txt")
        _run(str(python), "-m", "pip", "wheel", "-q", "-c", constraints, "-w", str(wheels), str(repo), timeout=1800)
        build_backend = ("setuptools>=75", "wheel")  # pyproject's build-system.requires, for an index-less build
        _run(str(python), "-m", "pip", "download", "-q", "-d", str(wheels), *build_backend, timeout=600)
        self.podman(
            "build",
            *ULIMITS,
            "--build-arg",
            f"BASE_IMAGE={self.base()}",
            "--build-arg",
            "PIP_NO_INDEX=1",
            "--build-arg",
            "PIP_FIND_LINKS=/wheels",
            "--volume",
            f"{wheels}:/wheels:ro",
            "-f",
            str(repo / "Dockerfile"),
            "-t",
            image,
            str(repo),
            timeout=1800,
        )
        self._save(image, archive)
        self._forget_other_operator_images(image)
        self.timings["operator image"] = time.monotonic() - started
        return image, archive

    def _forget_other_operator_images(self, keep: str) -> None:
        """Images of earlier sources: each is ~600 MB in vfs storage."""
        for archive in self.cache.glob("amlwire-*.tar"):
            if archive.name != f"amlwire-{keep.rsplit(':', 1)[1]}.tar":
                archive.unlink()
        for image in self.podman("images", "--format", "{{.Repository}}:{{.Tag}}", OPERATOR_REPOSITORY).split():
            if image != keep:
                with contextlib.suppress(NodeError):
                    self.podman("rmi", image)

    def size(self, image: str) -> int:
        return int(self.podman("image", "inspect", "--format", "{{.Size}}", image).strip())

    def _save(self, image: str, archive: Path) -> None:
        self.podman("save", "--format", "docker-archive", "-o", f"{archive}.part", image)
        Path(f"{archive}.part").rename(archive)


def _source_digest(repo: Path) -> str:
    """What the operator image is built from: the Dockerfile, packaging files and the package's sources."""
    digest = hashlib.sha256()
    files = [repo / "Dockerfile", repo / "pyproject.toml", repo / "constraints.txt", repo / "README.md"]
    package = repo / "operator" / "amlwire"  # all the Dockerfile copies of operator/
    files += sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(repo)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class Node:
    """containerd and a kubelet registered as `plane.node_name` with a ControlPlane started with cluster=True."""

    plane: ControlPlane
    bin_dir: Path
    images: list[Path]
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="amlwire-node-")))
    ready_timeout: float = 120.0
    timings: dict[str, float] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def name(self) -> str:
        return self.plane.node_name

    def start(self) -> Node:
        started = time.monotonic()
        try:
            self._start_containerd()
            for archive in self.images:
                self.ctr("images", "import", str(archive))
            self._start_kubelet()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.timings["node start"] = time.monotonic() - started
        return self

    def ctr(self, *args: str) -> str:
        return _run("ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args, timeout=600)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _spawn(self, name: str, args: list[str]) -> None:
        self._procs[name], log = spawn_logged(args, self.workdir / f"{name}.log")
        self._logs.append(log)

    def _start_containerd(self) -> None:
        cni = self.workdir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        # the runtime reports its network ready only with a CNI config; pods here use the host's network
        (cni / "10-amlwire.conflist").write_text(
            '{"cniVersion": "1.0.0", "name": "amlwire", "plugins": [{"type": "bridge", "bridge": "amlwire0", '
            '"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24"}]]}}]}\n'
        )
        config = self.workdir / "containerd.toml"
        config.write_text(
            f"""version = 2
root = "{self.workdir / "containerd" / "root"}"
state = "{self.workdir / "containerd" / "state"}"
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"""
        )
        self._spawn("containerd", ["containerd", "--config", str(config)])
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if time.monotonic() > deadline or self._procs["containerd"].poll() is not None:
                raise NodeError(f"containerd did not start:\n{self.log_tail('containerd')}")
            time.sleep(0.2)

    def _start_kubelet(self) -> None:
        config = self.workdir / "kubelet.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "cgroupDriver": "cgroupfs",
                    "failCgroupV1": False,  # the CI machine has cgroup v1
                    "cgroupsPerQOS": False,
                    "enforceNodeAllocatable": [],
                    "failSwapOn": False,
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    "address": "127.0.0.1",
                    "port": free_port(),
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": free_port(),
                    "readOnlyPort": 0,
                    "localStorageCapacityIsolation": False,
                    "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
                    "authorization": {"mode": "AlwaysAllow"},
                    "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "syncFrequency": "5s",
                    "fileCheckFrequency": "5s",
                    "nodeStatusUpdateFrequency": "5s",
                    "resolvConf": "/etc/resolv.conf",
                    "podLogsDir": str(self.workdir / "pods"),
                }
            )
        )
        self._spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                "--config",
                str(config),
                "--kubeconfig",
                str(self.plane.node_kubeconfig),
                "--root-dir",
                str(self.workdir / "kubelet"),
                "--cert-dir",
                str(self.workdir / "kubelet-pki"),
                "--hostname-override",
                self.name,
                "--node-ip",
                "127.0.0.1",
                "--v",
                "1",
            ],
        )

    def _wait_ready(self) -> None:
        import requests

        headers = {"Authorization": f"Bearer {self.plane.admin_token}"}
        url = f"{self.plane.server}/api/v1/nodes/{self.name}"
        deadline, last = time.monotonic() + self.ready_timeout, "not registered"
        while time.monotonic() < deadline:
            if self._procs["kubelet"].poll() is not None:
                raise NodeError(f"the kubelet exited:\n{self.log_tail('kubelet')}")
            answer = requests.get(url, headers=headers, verify=str(self.plane.ca_file), timeout=5)
            if answer.status_code == 200:
                conditions = {c["type"]: c for c in answer.json()["status"].get("conditions", [])}
                ready = conditions.get("Ready", {})
                if ready.get("status") == "True":
                    return
                last = f"Ready {ready.get('status')}: {ready.get('message')}"
            time.sleep(0.5)
        raise NodeError(
            f"node {self.name} not Ready after {self.ready_timeout:.0f}s ({last}):\n{self.log_tail('kubelet')}"
        )

    def stop(self) -> None:
        """The kubelet first (so it restarts nothing), then every container and sandbox, then containerd."""
        kubelet = self._procs.pop("kubelet", None)
        if kubelet is not None:
            _end(kubelet)
        if "containerd" in self._procs:
            with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
                for task in self.ctr("tasks", "list", "--quiet").split():
                    with contextlib.suppress(NodeError):
                        self.ctr("tasks", "kill", "--signal", "SIGKILL", task)
                time.sleep(0.5)
                for task in self.ctr("tasks", "list", "--quiet").split():
                    with contextlib.suppress(NodeError):
                        self.ctr("tasks", "delete", "--force", task)
                for container in self.ctr("containers", "list", "--quiet").split():
                    with contextlib.suppress(NodeError):
                        self.ctr("containers", "delete", container)
            _end(self._procs.pop("containerd"))
        for log in self._logs:
            log.close()
        self._logs.clear()
        _unmount_below(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _unmount_below(folder: Path) -> None:
    """Mounts the kubelet and containerd left (volumes, rootfs, shm): deepest first."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    targets = [line.split()[1] for line in mounts if line.split()[1].startswith(str(folder))]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
