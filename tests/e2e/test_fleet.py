"""A fleet: two clusters, each with its own apiserver and its own amlwire operator (a process, as in its pod), on
one Azure, federating the same managed identity. What one cluster's amlwire removes must not be what the other's
compute still uses: that is known from Azure only (the other cluster is not a neighbour in this apiserver)."""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator

import pytest

from amlwire.domain.federation import credential_name
from amlwire_devenv.cluster import items_of
from amlwire_devenv.controlplane import ControlPlane, find_binaries
from amlwire_devenv.stack import prepare_cluster, spawn_operator
from amlwire_sandbox.cloud import issuer_url
from tests.conftest import REPO, wait_for
from tests.e2e.harness import CLUSTER_ID, FIC_TYPE, IDENTITY_ID, IDENTITY_PRINCIPAL, Harness

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
    stack.operator_process = process  # type: ignore[attr-defined]
    try:
        yield stack
    finally:
        stop(process)
        stack.close()


def stop(process) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    with contextlib.suppress(Exception):
        process.wait(timeout=20)
    if process.poll() is None:
        process.kill()


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
    wait_for(lambda: not harness.exists(west), 60, what="the west compute to go")
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
    rebuilt = issuer_url(harness.sandbox.base_url, "eastus", harness.tenant, "rebuilt-green")
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


@pytest.mark.parametrize("issuer_after_delete", ["notFound", "served"])
def test_a_cluster_that_disappeared_is_reported_and_never_guessed_away(harness, east, issuer_after_delete):
    """The east cluster is deleted in Azure without its AttachedCompute being deleted first (its operator goes with
    it): its credentials stay on the shared identity. When the west compute goes, amlwire asks the east issuer,
    as Entra would. Answered 404: the east cluster holds nothing, the roles go, and a Warning names east's
    credentials and the commands that remove them (amlwire leaves them). Still served (the world where AKS keeps
    the document): amlwire cannot tell, and keeps the roles."""
    harness.sandbox.sandbox.world.rules.deleted_cluster_issuer = issuer_after_delete
    west = harness.wired()
    name = east.apply_compute("robotics-gpu", cluster__name="aks-east", compute__name="k8s-east")
    east.wait_ready(name, timeout=60)
    east_issuer = next(i for i in issuers(harness) if "/aks-east/" in i)
    east_fics = issuers(harness)[east_issuer]
    assert all(n.startswith("amlwire-aks-east-") for n in east_fics), east_fics  # names say whose they are
    stop(east.operator_process)
    harness.ctl.delete(cluster_id("aks-east"))

    west_uid = harness.compute(west)["metadata"]["uid"]
    harness.delete_compute(west)
    wait_for(lambda: gone(harness, west), 60, what="the west compute to go")
    events = {e.reason: e for e in harness.events(west, west_uid)}
    assert issuers(harness) == {east_issuer: east_fics}, "east's credentials are reported, never deleted here"
    if issuer_after_delete == "notFound":
        assert harness.role_assignments(IDENTITY_PRINCIPAL) == []
        warning = events["FederatedClusterGone"]
        assert warning.type == "Warning"
        assert east_issuer in warning.message
        assert all(
            f"az identity federated-credential delete --identity-name id-ml -g rg-id -n {n}" in warning.message
            for n in east_fics
        )
        assert "RoleAssignmentKept" not in events
    else:
        assert len(harness.role_assignments(IDENTITY_PRINCIPAL)) > 0
        assert "it publishes its keys" in events["RoleAssignmentKept"].message
        assert "FederatedClusterGone" not in events


def test_an_eleventh_cluster_on_one_identity_is_refused_before_any_write_and_told_whose_the_credentials_are(
    harness, east
):
    """West (3 credentials) and eight more clusters (2 each, written by their own amlwire) fill 19 of the 20.
    East needs 3: FederationReady names the cap and every other cluster, and nothing is written. One of the eight
    is deleted: the condition names it gone with the commands; once the admin runs them, east is wired."""
    harness.wired()
    others = [cluster_id(harness.add_cluster(f"aks-pool-{i}")) for i in range(8)]
    for cluster in others:
        issuer = harness.ctl.resource(cluster)["properties"]["oidcIssuerProfile"]["issuerURL"]
        for account in ("default", "training"):
            credential = credential_name("azureml", account, issuer, cluster.rsplit("/", 1)[1])
            harness.ctl.create(
                f"{IDENTITY_ID}/federatedIdentityCredentials/{credential}",
                FIC_TYPE,
                {
                    "properties": {
                        "issuer": issuer,
                        "subject": f"system:serviceaccount:azureml:{account}",
                        "audiences": ["api://AzureADTokenExchange"],
                    }
                },
                {"backdated": True},
            )
    assert len(harness.fics()) == 19
    writes_before = fic_writes(harness)
    name = east.apply_compute("robotics-gpu", cluster__name="aks-east", compute__name="k8s-east")
    refused = east.wait_condition(name, "FederationReady", "False", "FederatedCredentialLimit", timeout=60)
    message = condition_of(refused, "FederationReady")["message"]
    assert "Azure allows 20 per identity" in message
    assert all(i in message for i in issuers(harness)), "every other cluster holding the identity is named"
    assert fic_writes(harness) == writes_before  # refused before any write
    assert len(harness.fics()) == 19

    harness.ctl.delete(others[3])
    gone_issuer = "/aks-pool-3/"

    def says_gone():
        message = condition_of(east.compute(name), "FederationReady")["message"]
        return "is gone" in message and gone_issuer in message and message

    message = wait_for(says_gone, 60, what="the condition to name the deleted cluster")
    commands = re.findall(r"az identity federated-credential delete [^&]*?-n (\S+)", message)
    assert sorted(commands) == sorted(n for n, f in harness.fics().items() if gone_issuer in f["issuer"])
    for credential in commands:
        harness.ctl.delete(f"{IDENTITY_ID}/federatedIdentityCredentials/{credential}")
    east.wait_ready(name, timeout=60)
    assert len(harness.fics()) == 20


def cluster_id(name: str) -> str:
    return CLUSTER_ID.replace("aks-robotics", name)


def gone(harness: Harness, name: str) -> bool:
    items = items_of(harness.custom.list_cluster_custom_object("amlwire.io", "v1alpha1", "attachedcomputes"))
    return name not in {c["metadata"]["name"] for c in items}


def condition_of(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def fic_writes(harness: Harness) -> int:
    """FIC writes Azure answered (PUT or DELETE), whoever made them; the test's own seeding is not counted."""
    calls = harness.ctl.counts()
    return sum(n for call, n in calls.items() if call.split()[0] in ("PUT", "DELETE") and "msi.fic" in call)
