"""Managed identities and federated identity credentials, driven by azure-mgmt-msi: Entra's rules."""

from __future__ import annotations

import threading

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import FederatedIdentityCredential, Identity

from tests.sandbox.conftest import AUDIENCE, IDENTITY_PRINCIPAL, SUB

pytestmark = pytest.mark.sandbox
ISSUER = "https://eastus.oic.prod-aks.azure.com/tenant/cluster/"


@pytest.fixture
def msi(credential, arm):
    return ManagedServiceIdentityClient(credential, SUB, **arm)


def fic(
    subject: str = "system:serviceaccount:azureml:default", issuer: str = ISSUER, audiences: list[str] | None = None
) -> FederatedIdentityCredential:
    return FederatedIdentityCredential(issuer=issuer, subject=subject, audiences=audiences or [AUDIENCE])


def test_get_identity(msi):
    identity = msi.user_assigned_identities.get("rg-id", "id-ml")
    assert identity.principal_id == IDENTITY_PRINCIPAL
    assert identity.client_id == "3c5b0f0e-1d6e-4a7b-9c2d-5e6f7a8b9c01"


def test_missing_identity_is_404(msi):
    with pytest.raises(ResourceNotFoundError) as caught:
        msi.user_assigned_identities.get("rg-id", "id-nope")
    assert caught.value.error.code == "ResourceNotFound"


def test_create_identity(msi):
    created = msi.user_assigned_identities.create_or_update("rg-id", "id-new", Identity(location="eastus"))
    assert created.client_id
    assert created.principal_id
    assert msi.user_assigned_identities.get("rg-id", "id-new").client_id == created.client_id


def test_federated_credential_round_trip(msi):
    written = msi.federated_identity_credentials.create_or_update("rg-id", "id-ml", "amlwire-default", fic())
    assert (written.issuer, written.subject, written.audiences) == (
        ISSUER,
        "system:serviceaccount:azureml:default",
        [AUDIENCE],
    )
    updated = msi.federated_identity_credentials.create_or_update(
        "rg-id", "id-ml", "amlwire-default", fic(issuer="https://other.example/")
    )
    assert updated.issuer == "https://other.example/"
    assert [f.name for f in msi.federated_identity_credentials.list("rg-id", "id-ml")] == ["amlwire-default"]
    assert msi.federated_identity_credentials.get("rg-id", "id-ml", "amlwire-default").subject.endswith(":default")
    msi.federated_identity_credentials.delete("rg-id", "id-ml", "amlwire-default")
    with pytest.raises(ResourceNotFoundError):
        msi.federated_identity_credentials.get("rg-id", "id-ml", "amlwire-default")


def test_listing_follows_next_links(msi, ctl):
    ctl.timing(pageSize=3)
    for index in range(7):
        msi.federated_identity_credentials.create_or_update(
            "rg-id", "id-ml", f"fic-{index}", fic(subject=f"system:serviceaccount:ns:sa{index}")
        )
    assert len(list(msi.federated_identity_credentials.list("rg-id", "id-ml"))) == 7
    assert ctl.counts()["GET msi.fic.list"] == 3


RULES = [
    ("name-too-short", "ab", fic(), "is invalid. The name must be 3-120 characters"),
    ("name-bad-character", "amlwire.default", fic(), "is invalid"),
    ("name-starts-with-dash", "-amlwire", fic(), "is invalid"),
    ("two-audiences", "amlwire-x", fic(audiences=[AUDIENCE, "api://other"]), "exactly one audience"),
    (
        "no-audience",
        "amlwire-x",
        FederatedIdentityCredential(issuer=ISSUER, subject="s", audiences=[]),
        "exactly one audience",
    ),
    ("issuer-too-long", "amlwire-x", fic(issuer="https://" + "x" * 600), "at most 600 characters"),
]


@pytest.mark.parametrize(("case", "name", "credential_", "message"), RULES, ids=[r[0] for r in RULES])
def test_federated_credential_rules(msi, case, name, credential_, message):
    with pytest.raises(HttpResponseError) as caught:
        msi.federated_identity_credentials.create_or_update("rg-id", "id-ml", name, credential_)
    assert caught.value.status_code == 400
    assert caught.value.error.code == "BadRequest"
    assert message in caught.value.error.message


def test_duplicate_issuer_and_subject_is_refused(msi):
    msi.federated_identity_credentials.create_or_update("rg-id", "id-ml", "first", fic())
    with pytest.raises(HttpResponseError) as caught:
        msi.federated_identity_credentials.create_or_update("rg-id", "id-ml", "second", fic())
    assert caught.value.status_code == 400
    assert caught.value.error.message == "Issuer and subject combination already exists for this Managed Identity."


def test_twenty_credentials_per_identity(msi):
    for index in range(20):
        msi.federated_identity_credentials.create_or_update(
            "rg-id", "id-ml", f"fic-{index:02d}", fic(subject=f"system:serviceaccount:ns:sa{index}")
        )
    with pytest.raises(HttpResponseError) as caught:
        msi.federated_identity_credentials.create_or_update(
            "rg-id", "id-ml", "fic-20", fic(subject="system:serviceaccount:ns:one-too-many")
        )
    assert "reached the limit of 20" in caught.value.error.message
    # updating one of the twenty is still allowed
    msi.federated_identity_credentials.create_or_update(
        "rg-id", "id-ml", "fic-00", fic(subject="system:serviceaccount:ns:sa0", issuer="https://new.example/")
    )


def test_missing_parent_identity_is_404(msi):
    with pytest.raises(ResourceNotFoundError):
        msi.federated_identity_credentials.create_or_update("rg-id", "id-nope", "amlwire-x", fic())


def _write_concurrently(msi, writes):
    barrier = threading.Barrier(len(writes))
    outcomes: list[object] = [None] * len(writes)

    def write(index, identity, name, subject):
        barrier.wait()
        try:
            msi.federated_identity_credentials.create_or_update("rg-id", identity, name, fic(subject=subject))
            outcomes[index] = "ok"
        except HttpResponseError as error:
            outcomes[index] = error

    threads = [threading.Thread(target=write, args=(i, *w)) for i, w in enumerate(writes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_writes_to_one_identity_get_409_without_retry_after(msi, ctl):
    ctl.timing(ficWriteWindowSeconds=0.5)
    outcomes = _write_concurrently(
        msi, [("id-ml", "fic-a", "system:serviceaccount:a:a"), ("id-ml", "fic-b", "system:serviceaccount:b:b")]
    )
    errors = [o for o in outcomes if isinstance(o, HttpResponseError)]
    assert outcomes.count("ok") == 1
    (error,) = errors
    assert isinstance(error, ResourceExistsError)
    assert error.status_code == 409
    assert error.error.code == "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"
    assert "Concurrent Federated Identity Credentials writes under the same managed identity are not supported" in (
        error.error.message
    )
    assert "Retry-After" not in error.response.headers


def test_concurrent_writes_to_different_identities_succeed(msi, ctl):
    msi.user_assigned_identities.create_or_update("rg-id", "id-other", Identity(location="eastus"))
    ctl.timing(ficWriteWindowSeconds=0.5)
    outcomes = _write_concurrently(
        msi, [("id-ml", "fic-a", "system:serviceaccount:a:a"), ("id-other", "fic-b", "system:serviceaccount:b:b")]
    )
    assert outcomes == ["ok", "ok"]
