"""`amlwire sandbox` runs standalone with the example world and says how to point the SDKs at it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml
from azure.mgmt.containerservice import ContainerServiceClient

from amlwire_sandbox.ports import free_port
from tests.conftest import REPO
from tests.sandbox.conftest import OWNER_PRINCIPAL, OWNER_ROLE, SUB, StaticCredential

pytestmark = pytest.mark.sandbox


def test_standalone_sandbox_with_the_example_world(tmp_path):
    port, ca_file = free_port(), tmp_path / "ca.pem"
    world = yaml.safe_load((REPO / "examples/sandbox/world.yaml").read_text())
    world["roleAssignments"].append(  # whoever drives a sandbox needs a role: ARM authorises every call
        {"scope": f"/subscriptions/{SUB}", "roleDefinitionId": OWNER_ROLE, "principalId": OWNER_PRINCIPAL}
    )
    world_file = tmp_path / "world.yaml"
    world_file.write_text(yaml.safe_dump(world))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "amlwire.cli.main",
            "sandbox",
            "--world",
            str(world_file),
            "--port",
            str(port),
            "--ca-file",
            str(ca_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("Ctrl-C" in line for line in lines):
            lines.append(process.stdout.readline())
        output = "".join(lines)
        base = f"https://127.0.0.1:{port}"
        assert f"listening on {base}" in output
        assert f"export AMLWIRE_ARM_ENDPOINT={base}" in output
        assert f"export AMLWIRE_CA_BUNDLE={ca_file}" in output
        cluster = ContainerServiceClient(
            StaticCredential(SimpleNamespace(base_url=base, ca_file=ca_file)),
            SUB,
            base_url=base,
            connection_verify=str(ca_file),
            credential_scopes=[base + "/.default"],
        ).managed_clusters.get("rg-aks", "aks-robotics")
        assert cluster.oidc_issuer_profile.enabled
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
