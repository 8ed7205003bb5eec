"""A fleet on one Azure: N clusters, each with its own apiserver and its own amlwire (a process, as in its pod),
sharing two identities and two workspaces.

Prints: time until every compute is Ready, ARM calls per cluster, 409s absorbed, duplicate federated
credentials and role assignments (0 expected); then deletes the computes of half the clusters and prints what of
them remains in Azure (0 expected) and whether a job on each remaining cluster still completes.
Run: .venv/bin/python bench/fleet.py [--clusters 6]
"""

from __future__ import annotations

import argparse
import copy
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from rich.console import Console
from rich.table import Table

from amlwire_devenv.cluster import as_object, items_of
from amlwire_devenv.stack import OPERATOR_PRINCIPAL_ID, LocalStack, spawn_operator
from amlwire_sandbox.world import IdentityWorld, StorageAccountWorld, WorkspaceIdentity, WorkspaceWorld, World
from bench.common import GROUP, REPO, VERSION, fast_world, is_ready, start_plane, wait

SUB = "6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60"
RG = f"/subscriptions/{SUB}/resourceGroups"
IDENTITIES = ("id-ml", "id-ml-2")
WORKSPACES = (("mlw-robotics", "stmlrobotics"), ("mlw-robotics-2", "stmlrobotics2"))


def fleet_world() -> World:
    """The example world plus a second identity, workspace and storage account; a credential write holds its
    identity for the sandbox's default window, so operators writing one identity at once meet Azure's 409."""
    world = fast_world()
    world.timing.fic_write_window_seconds = type(world.timing)().fic_write_window_seconds
    world.identities.append(
        IdentityWorld(
            resource_group="rg-id", name=IDENTITIES[1], client_id=str(uuid.uuid4()), principal_id=str(uuid.uuid4())
        )
    )
    world.storage_accounts.append(StorageAccountWorld(resource_group="rg-ml", name=WORKSPACES[1][1]))
    world.workspaces.append(
        WorkspaceWorld(
            resource_group="rg-ml",
            name=WORKSPACES[1][0],
            storage_account=WORKSPACES[1][1],
            identity=WorkspaceIdentity(principal_id=str(uuid.uuid4())),
        )
    )
    return world


def compute_for(index: int) -> dict[str, Any]:
    """The example AttachedCompute for cluster `index`: half the fleet on each identity and workspace."""
    manifest = yaml.safe_load((REPO / "examples" / "attachedcompute.yaml").read_text())
    identity, (workspace, storage) = IDENTITIES[index % 2], WORKSPACES[index % 2]
    spec = manifest["spec"]
    spec["cluster"]["name"] = f"aks-fleet-{index}"
    spec["compute"]["name"] = f"k8s-fleet-{index}"
    spec["workspace"]["name"] = workspace
    spec["identity"]["resourceId"] = f"{RG}/rg-id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{identity}"
    for grant in spec["access"]["grants"]:
        grant["scope"] = grant["scope"].replace("mlw-robotics", workspace).replace("stmlrobotics", storage)
    return manifest


def duplicates(resources: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """Federated credentials with the same (identity, issuer, subject), and role assignments with the same
    (scope, role, principal): more than one of each is a duplicate."""
    fics: Counter[tuple[str, ...]] = Counter()
    roles: Counter[tuple[str, ...]] = Counter()
    for rid, body in resources.items():
        props = body.get("properties") or {}
        if "/federatedIdentityCredentials/" in rid:
            fics[(rid.split("/federatedIdentityCredentials/")[0].lower(), props["issuer"], props["subject"])] += 1
        elif "/roleAssignments/" in rid:
            roles[(props["scope"].lower(), props["roleDefinitionId"].lower(), props["principalId"])] += 1
    return sum(n - 1 for n in fics.values()), sum(n - 1 for n in roles.values())


def role_assignments(resources: dict[str, dict[str, Any]]) -> set[str]:
    """The compute identities' role assignments (not amlwire's own)."""
    return {
        rid
        for rid, body in resources.items()
        if "/roleAssignments/" in rid and body["properties"]["principalId"] != OPERATOR_PRINCIPAL_ID
    }


class Fleet:
    def __init__(self, size: int) -> None:
        world = fleet_world()
        self.stacks: list[LocalStack] = []
        self.customs: list[client.CustomObjectsApi] = []
        self.operators: list[subprocess.Popen[bytes]] = []
        for index in range(size):
            plane, kube = start_plane()
            workdir = Path(tempfile.mkdtemp(prefix=f"amlwire-fleet-{index}-"))
            joins = self.stacks[0] if self.stacks else None
            stack = LocalStack(plane, copy.deepcopy(world), workdir, kube, joins=joins)
            stack.add_cluster(f"aks-fleet-{index}")
            self.stacks.append(stack)
            self.customs.append(client.CustomObjectsApi(kube))
        self.ctl = self.stacks[0].ctl
        for stack in self.stacks:
            log = stack.workdir / "operator.log"
            self.operators.append(spawn_operator(stack, log, job_poll_interval=0.5, drift_interval=600))

    def apply(self, index: int) -> None:
        self.customs[index].create_cluster_custom_object(GROUP, VERSION, "attachedcomputes", compute_for(index))

    def ready(self, indexes: list[int]) -> bool:
        return all(is_ready(self.customs[i], "robotics-gpu") for i in indexes)

    def gone(self, index: int) -> bool:
        names = {
            c["metadata"]["name"]
            for c in items_of(self.customs[index].list_cluster_custom_object(GROUP, VERSION, "attachedcomputes"))
        }
        return "robotics-gpu" not in names

    def job_completes(self, index: int) -> bool:
        manifest = yaml.safe_load((REPO / "examples" / "amljob-command.yaml").read_text())
        name = f"j-{uuid.uuid4().hex[:6]}"
        manifest["metadata"].update(name=name, namespace="robotics")
        manifest["spec"]["computeRef"] = "robotics-gpu"
        custom = self.customs[index]
        custom.create_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", manifest)

        def status() -> str:
            job = as_object(custom.get_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", name))
            return (job.get("status") or {}).get("amlStatus", "")

        wait(lambda: status() in ("Completed", "Failed", "Canceled"), 180, 0.2)
        return status() == "Completed"

    def leftovers(self, index: int) -> list[str]:
        """What of cluster `index` remains in Azure: its credentials (by its issuer) and its compute."""
        issuer = f"/aks-fleet-{index}/"
        state = self.ctl.state()["resources"]
        left = [
            k for k, v in state.items() if "/federatedIdentityCredentials/" in k and issuer in v["properties"]["issuer"]
        ]
        left += [k for k in state if k.lower().endswith(f"/computes/k8s-fleet-{index}")]
        return left

    def close(self) -> None:
        for process in self.operators:
            process.send_signal(signal.SIGTERM)
        for process in self.operators:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for stack in reversed(self.stacks):
            stack.close()
            stack.plane.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=6)
    args = parser.parse_args()
    console = Console()
    started = time.monotonic()
    fleet = Fleet(args.clusters)
    setup = time.monotonic() - started
    everyone = list(range(args.clusters))
    try:
        mark = fleet.ctl.mark()
        for index in everyone:
            fleet.apply(index)
        converge = wait(lambda: fleet.ready(everyone), 600, 0.5)
        calls = [
            c for c in fleet.ctl.calls(since=mark) if not c["route"].startswith(("control.", "entra.", "sandbox."))
        ]
        conflicts = sum(1 for c in calls if c["status"] == 409)
        fic_dupes, role_dupes = duplicates(fleet.ctl.state()["resources"])

        # half of each identity's clusters go: what the other half shares with them must stay
        deleted, kept = everyone[: args.clusters // 2], everyone[args.clusters // 2 :]
        before = role_assignments(fleet.ctl.state()["resources"])
        for index in deleted:
            fleet.customs[index].delete_cluster_custom_object(GROUP, VERSION, "attachedcomputes", "robotics-gpu")
        wait(lambda: all(fleet.gone(i) for i in deleted), 300, 0.5)
        left = [item for i in deleted for item in fleet.leftovers(i)]
        lost = before - role_assignments(fleet.ctl.state()["resources"])
        completed = sum(fleet.job_completes(i) for i in kept)
        still_ready = fleet.ready(kept)
    finally:
        fleet.close()

    table = Table(
        title=f"amlwire fleet: {args.clusters} clusters, {args.clusters} operators, 2 identities, 2 workspaces"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("set-up: apiservers, sandbox, operators (s)", f"{setup:.1f}")
    table.add_row("time until every compute is Ready (s)", f"{converge:.1f}")
    table.add_row("ARM calls per cluster", f"{len(calls) / args.clusters:.1f}")
    table.add_row("409 answers absorbed (concurrent credential writes)", str(conflicts))
    table.add_row("duplicate federated credentials", str(fic_dupes))
    table.add_row("duplicate role assignments", str(role_dupes))
    table.add_row(f"deleted computes in {len(deleted)} clusters: their objects left in Azure", str(len(left)))
    table.add_row("role assignments removed that remaining clusters share", str(len(lost)))
    table.add_row(f"remaining {len(kept)} clusters still Ready", str(still_ready))
    table.add_row(f"jobs completed on the remaining clusters (of {len(kept)})", str(completed))
    console.print(table)


if __name__ == "__main__":
    main()
