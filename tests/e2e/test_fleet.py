"""A fleet: two clusters, each with its own apiserver and its own amlwire operator (a process, as in its pod), on
one Azure, federating the same managed identity. What one cluster's amlwire removes must not be what the other's
compute still uses: that is known from Azure only (the other cluster is not a neighbour in this apiserver)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import pytest

from amlwire_devenv.controlplane import ControlPlane, find_binaries
from amlwire_devenv.stack import prepare_cluster, spawn_operator
from tests.conftest import REPO, wait_for
from tests.e2e.harness import CLUSTER_ID, IDENTITY_ID, IDENTITY_PRINCIPAL, Harness

pytestmark = [pytest.mark.kube, pytest.mark.sandbox, pytest.mark.slow]


@pytest.fixture(scope="module")
def east_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The second cluster's apiserver, with its own service-account issuer."""
    plane = ControlPlane(find_binaries(REPO), workdir=tmp_path_factory.mktemp("east")).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def east(harness: Harness, east_plane: ControlPlane, tmp_path) -> Iterator[Harness]:
    """Cluster aks-east on the same Azure as the harness's cluster, its amlwire running as a process."""
    from amlwire_devenv.stack import kube_client

    kube = kube_client(east_plane)
    prepare_cluster(kube)
    stack = Harness(east_plane, kube, tmp_path / "east", joins=harness)
    stack.add_cluster("aks-east")
    process = spawn_operator(stack, tmp_path / "east-operator.log", job_poll_interval=0.5, drift_interval=600)
    try:
        yield stack
    finally:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(Exception):
            process.wait(timeout=20)
        if process.poll() is None:
            process.kill()
        stack.close()


def issuers(harness: Harness) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, fic in harness.fics().items():
        found.setdefault(fic["issuer"], set()).add(name)
    return found


def test_deleting_a_compute_in_one_cluster_leaves_what_the_other_cluster_uses(harness, east):
    west = harness.wired()
    name = east.apply_compute("robotics-gpu", cluster__name="aks-east", compute__name="k8s-east")
    east.wait_ready(name, timeout=60)
    by_issuer = issuers(harness)
    east_issuer = next(i for i in by_issuer if "/aks-east/" in i)
    assert len(by_issuer) == 2, by_issuer
    assert len(by_issuer[east_issuer]) == 3, by_issuer
    assigned = harness.role_assignments(IDENTITY_PRINCIPAL)
    roles = sorted(a["id"] for a in assigned)
    assert roles, "the example grants roles to the shared identity"
    # who made them is in a field Azure keeps: the first cluster's compute made them, the second found them
    assert {a["properties"].get("description") for a in assigned} == {
        "Created by amlwire for AttachedCompute robotics-gpu on cluster " + CLUSTER_ID
    }

    west_uid = harness.compute(west)["metadata"]["uid"]
    harness.delete_compute(west)
    wait_for(
        lambda: (
            west
            not in {
                c["metadata"]["name"]
                for c in harness.custom.list_cluster_custom_object("amlwire.io", "v1alpha1", "attachedcomputes")[
                    "items"
                ]
            }
        ),
        60,
        what="the west compute to go",
    )
    assert issuers(harness) == {east_issuer: by_issuer[east_issuer]}, "only the west cluster's credentials went"
    assert sorted(a["id"] for a in harness.role_assignments(IDENTITY_PRINCIPAL)) == roles
    kept = [e for e in harness.events(west, west_uid) if e.reason == "RoleAssignmentKept"]
    assert kept
    assert "aks-east" in kept[0].message
    assert harness.sandbox_compute("k8s-gpu") is None
    job = east.apply_job()
    east.wait_job(job, "Finished", timeout=90)
    assert east.job(job)["status"]["amlStatus"] == "Completed"

    east.delete_compute(name)
    wait_for(lambda: not harness.fics(), 60, what="the last cluster's credentials to go")
    wait_for(lambda: not harness.role_assignments(IDENTITY_PRINCIPAL), 60, what="the roles to go with the last")
    assert harness.ctl.resource(IDENTITY_ID) is not None  # the identity is the user's


def test_a_cluster_rebuilt_under_its_name_with_a_new_issuer_is_federated_anew_and_the_old_credentials_go(harness):
    """Blue/green: the cluster comes back under the same name with a new OIDC issuer. The old issuer's
    credentials are this compute's (not another cluster's) and go; the new ones make the jobs work."""
    name = harness.wired()
    old = set(harness.fics())
    rebuilt = "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/rebuilt-green/"
    harness.ctl.patch(
        CLUSTER_ID,
        body={"properties": {"oidcIssuerProfile": {"issuerURL": rebuilt}}},
        extra={"issuer_url": rebuilt},
    )
    harness.request_reconcile(name)
    wait_for(
        lambda: [f["issuer"] for f in harness.fics().values()] == [rebuilt] * len(old),
        60,
        what="as many FICs as before, all the new issuer's",
    )
    assert not set(harness.fics()) & old
    harness.wait_ready(name)
    uid = harness.compute(name)["metadata"]["uid"]
    assert [e for e in harness.events(name, uid) if e.reason == "RoleAssignmentKept"] == []
    job = harness.apply_job()
    harness.wait_job(job, "Finished", timeout=90)
    assert harness.job(job)["status"]["amlStatus"] == "Completed"
