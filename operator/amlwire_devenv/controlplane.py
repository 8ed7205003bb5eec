"""etcd + kube-apiserver on loopback, envtest-style: token auth, RBAC on, real CRDs and admission.

Binaries come from `make testenv` (hack/testenv.sh), found through AMLWIRE_TESTENV_BIN or the cache
folder .cache/testenv/*/bin of the repository.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from amlwire_devenv.cluster import cluster_role_binding
from amlwire_devenv.process import spawn_logged
from amlwire_sandbox.ports import free_port

ADMIN_USER = "admin"
OPERATOR_USER = "amlwire-operator"
VIEWER_USER = "amlwire-viewer"
REQUIRED_BINARIES = ("etcd", "kube-apiserver")


class ControlPlaneError(RuntimeError):
    """The local control plane could not start."""


def find_binaries(start: Path | None = None) -> Path:
    """The folder holding etcd and kube-apiserver, or a ControlPlaneError that says how to get them."""
    explicit = os.environ.get("AMLWIRE_TESTENV_BIN")
    candidates = [Path(explicit)] if explicit else []
    here = (start or Path.cwd()).resolve()
    for root in (here, *here.parents):
        candidates += sorted((root / ".cache" / "testenv").glob("*/bin"), reverse=True)
    for folder in candidates:
        if all((folder / name).is_file() for name in REQUIRED_BINARIES):
            return folder
    raise ControlPlaneError(
        "etcd and kube-apiserver are not built: run 'make testenv' (needs Go), "
        "or set AMLWIRE_TESTENV_BIN to a folder holding them"
    )


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver; `start()` then `stop()`, or use as a context manager."""

    bin_dir: Path
    workdir: Path | None = None
    startup_timeout: float = 90.0
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    operator_token: str = field(default_factory=lambda: secrets.token_hex(16))
    viewer_token: str = field(default_factory=lambda: secrets.token_hex(16))
    server: str = ""
    ca_file: Path = field(default_factory=Path)
    kubeconfig: Path = field(default_factory=Path)
    operator_kubeconfig: Path = field(default_factory=Path)
    viewer_kubeconfig: Path = field(default_factory=Path)
    audit_log: Path = field(default_factory=Path)
    # a cluster, not only an apiserver: ServiceAccount admission, the Node authorizer, a node identity, and
    # kube-controller-manager and kube-scheduler beside it (the node tier, tests/node)
    cluster: bool = False
    node_name: str = "amlwire-node"
    node_token: str = field(default_factory=lambda: secrets.token_hex(16))
    node_kubeconfig: Path = field(default_factory=Path)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _own_workdir: bool = False

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def service_account_issuer(self) -> str:
        return self.server

    def start(self) -> ControlPlane:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="amlwire-kube-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            etcd_url = self._start_etcd()
            self._start_apiserver(etcd_url)
            self._wait_ready()
            self._allow_issuer_discovery()
            if self.cluster:
                self._start_controllers()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver on the same port and etcd (a Kubernetes fault for tests)."""
        apiserver = next(p for p in self._procs if str(p.args[0]).endswith("/kube-apiserver"))  # type: ignore[index]
        self._procs.remove(apiserver)
        apiserver.terminate()
        try:
            apiserver.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it drains open watches first; a crash is as good a fault
            apiserver.kill()
            apiserver.wait(timeout=10)
        self._spawn("kube-apiserver", self._apiserver_args)
        self._wait_ready()

    def audit_records(self) -> list[dict[str, object]]:
        """Every request the apiserver has served so far (level Metadata: who, what, verb, status)."""
        import json

        text = self.audit_log.read_text() if self.audit_log.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def log_tail(self, name: str, lines: int = 40) -> str:
        assert self.workdir is not None
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.workdir is not None
        process, log = spawn_logged([str(self.bin_dir / name), *args], self.workdir / f"{name}.log")
        self._logs.append(log)
        self._procs.append(process)

    def _start_etcd(self) -> str:
        assert self.workdir is not None
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                url,
                "--advertise-client-urls",
                url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        return url

    def _start_apiserver(self, etcd_url: str) -> None:
        assert self.workdir is not None
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        ca = trustme.CA(organization_name="amlwire local control plane")
        serving = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = certs / "ca.crt"
        ca.cert_pem.write_to_path(str(self.ca_file))
        serving.private_key_and_cert_chain_pem.write_to_path(str(certs / "serving.pem"))
        sa_key = certs / "sa.key"
        sa_key.write_bytes(_rsa_private_key_pem())
        audit_policy = self.workdir / "audit-policy.yaml"
        audit_policy.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n"
        )
        self.audit_log = self.workdir / "audit.log"
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            f'{self.admin_token},{ADMIN_USER},admin-uid,"system:masters"\n'
            f"{self.operator_token},{OPERATOR_USER},operator-uid\n"
            f"{self.viewer_token},{VIEWER_USER},viewer-uid\n"
            f'{self.node_token},system:node:{self.node_name},node-uid,"system:nodes"\n'
        )
        self._apiserver_args = [
            "--etcd-servers",
            etcd_url,
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
            "--secure-port",
            str(port),
            "--tls-cert-file",
            str(certs / "serving.pem"),
            "--tls-private-key-file",
            str(certs / "serving.pem"),
            "--cert-dir",
            str(certs),
            "--service-cluster-ip-range",
            "10.0.0.0/24",
            "--service-account-issuer",
            self.server,
            "--service-account-key-file",
            str(sa_key),
            "--service-account-signing-key-file",
            str(sa_key),
            "--token-auth-file",
            str(tokens),
            "--authorization-mode",
            "Node,RBAC" if self.cluster else "RBAC",
            # without a kube-controller-manager nothing publishes kube-root-ca.crt for the token volumes
            *(() if self.cluster else ("--disable-admission-plugins", "ServiceAccount")),
            "--allow-privileged=true",
            "--endpoint-reconciler-type",
            "none",
            "--storage-media-type",
            "application/json",
            "--audit-policy-file",
            str(audit_policy),
            "--audit-log-path",
            str(self.audit_log),
            "--audit-log-format",
            "json",
            "--v",
            "1",
        ]
        self._spawn("kube-apiserver", self._apiserver_args)
        self.kubeconfig = self._write_kubeconfig("kubeconfig", ADMIN_USER, self.admin_token)
        self.operator_kubeconfig = self._write_kubeconfig("operator.kubeconfig", OPERATOR_USER, self.operator_token)
        self.viewer_kubeconfig = self._write_kubeconfig("viewer.kubeconfig", VIEWER_USER, self.viewer_token)
        self.node_kubeconfig = self._write_kubeconfig(
            "node.kubeconfig", f"system:node:{self.node_name}", self.node_token
        )

    def _write_kubeconfig(self, filename: str, user: str, token: str) -> Path:
        assert self.workdir is not None
        path = self.workdir / filename
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "local", "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _start_controllers(self) -> None:
        """kube-controller-manager (namespace deletion, garbage collection, ReplicaSets, kube-root-ca.crt) and
        kube-scheduler, as the cluster's admin."""
        assert self.workdir is not None
        certs = self.workdir / "certs"
        common = ["--kubeconfig", str(self.kubeconfig), "--leader-elect=false", "--bind-address", "127.0.0.1"]
        self._spawn(
            "kube-controller-manager",
            [
                *common,
                "--secure-port",
                str(free_port()),
                "--cert-dir",
                str(certs / "kcm"),
                "--service-account-private-key-file",
                str(certs / "sa.key"),
                "--root-ca-file",
                str(self.ca_file),
                "--use-service-account-credentials=false",
                "--cluster-name",
                "amlwire-testenv",
                "--v",
                "1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [*common, "--secure-port", str(free_port()), "--cert-dir", str(certs / "scheduler"), "--v", "1"],
        )

    def _allow_issuer_discovery(self) -> None:
        """What AKS does for its OIDC issuer: anyone may read the discovery document and JWKS (Entra fetches
        them anonymously to verify a projected token)."""
        binding = cluster_role_binding(
            "amlwire-testenv:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            "Group",
            "system:unauthenticated",
        )
        answer = requests.post(
            f"{self.server}/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json=binding,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            verify=str(self.ca_file),
            timeout=10,
        )
        if answer.status_code not in (201, 409):
            raise ControlPlaneError(f"binding issuer discovery: {answer.status_code} {answer.text}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        last = "no answer yet"
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    program = Path(str(proc.args[0] if isinstance(proc.args, list) else proc.args)).name
                    raise ControlPlaneError(f"{program} exited with {proc.returncode}:\n{self.log_tail(program)}")
            with contextlib.suppress(requests.RequestException):
                ready = requests.get(f"{self.server}/readyz", headers=headers, verify=str(self.ca_file), timeout=5)
                default_ns = requests.get(
                    f"{self.server}/api/v1/namespaces/default", headers=headers, verify=str(self.ca_file), timeout=5
                )
                if ready.status_code == 200 and default_ns.status_code == 200:
                    return
                last = f"/readyz {ready.status_code}, namespace default {default_ns.status_code}"
            time.sleep(0.3)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {self.startup_timeout:.0f}s ({last}):\n{self.log_tail('kube-apiserver')}"
        )


def _rsa_private_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
