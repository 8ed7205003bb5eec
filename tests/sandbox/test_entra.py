"""The sandbox's Entra checks assertions and tokens as Entra does (rules entra.assertion, entra.signed-tokens):
signed by the issuer's published keys, inside their time range, for the right audience, with Azure's codes."""

from __future__ import annotations

import time

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import WorkloadIdentityCredential
from kubernetes import client

from amlwire_sandbox.tokens import SigningKey
from tests.conftest import OWNER_PRINCIPAL
from tests.sandbox.conftest import AUDIENCE, CLUSTER_ID, IDENTITY_ID, IDENTITY_PRINCIPAL, TENANT

SUBJECT = "system:serviceaccount:amlwire-system:amlwire"
CLIENT_ID = "3c5b0f0e-1d6e-4a7b-9c2d-5e6f7a8b9c01"  # id-ml's, in the demo world
FIC_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"


def exchange(sandbox, tmp_path, assertion: str) -> str:
    """What azure-identity does with a projected token file: the client-assertion exchange at Entra."""
    token_file = tmp_path / "token"
    token_file.write_text(assertion)
    credential = WorkloadIdentityCredential(
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        token_file_path=str(token_file),
        authority=sandbox.base_url,
        connection_verify=str(sandbox.ca_file),
    )
    return credential.get_token(sandbox.base_url + "/.default").token


def federate(ctl, issuer: str, subject: str = SUBJECT) -> None:
    ctl.create(
        f"{IDENTITY_ID}/federatedIdentityCredentials/fic-{abs(hash(issuer)) % 10_000}",
        FIC_TYPE,
        {"properties": {"issuer": issuer, "subject": subject, "audiences": [AUDIENCE]}},
        {"backdated": True},
    )


def cluster_issuer(ctl) -> str:
    return ctl.resource(CLUSTER_ID)["properties"]["oidcIssuerProfile"]["issuerURL"]


def forged(issuer: str, **changes: int | str) -> str:
    now = int(time.time())
    claims = {"iss": issuer, "sub": SUBJECT, "aud": [AUDIENCE], "iat": now, "nbf": now, "exp": now + 3600}
    return SigningKey().sign({**claims, **changes})


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("signed by another key", "AADSTS700027"),
        ("expired", "AADSTS700024"),
        ("not yet valid", "AADSTS700024"),
        ("for another audience", "AADSTS700212"),
        ("not a JWT", "AADSTS50027"),
    ],
)
def test_an_assertion_entra_cannot_trust_is_refused_with_its_code(sandbox, ctl, tmp_path, kind, code):
    issuer = cluster_issuer(ctl)
    federate(ctl, issuer)
    assertion = {
        "signed by another key": lambda: forged(issuer),
        "expired": lambda: ctl.service_account_token(CLUSTER_ID, SUBJECT, expiresIn=-600),
        "not yet valid": lambda: ctl.service_account_token(CLUSTER_ID, SUBJECT, notBefore=600),
        "for another audience": lambda: ctl.service_account_token(CLUSTER_ID, SUBJECT, audience="api://other"),
        "not a JWT": lambda: "not-a-jwt",
    }[kind]()
    with pytest.raises(ClientAuthenticationError) as refused:
        exchange(sandbox, tmp_path, assertion)
    assert code in str(refused.value)
    assert ctl.issued_tokens() == []
    assert exchange(sandbox, tmp_path, ctl.service_account_token(CLUSTER_ID, SUBJECT))  # the genuine one works


def test_within_the_clock_skew_entra_tolerates_an_assertion_is_accepted(sandbox, ctl, tmp_path):
    federate(ctl, cluster_issuer(ctl))
    assert exchange(sandbox, tmp_path, ctl.service_account_token(CLUSTER_ID, SUBJECT, expiresIn=-30))


def test_an_issuer_entra_cannot_reach_is_refused(sandbox, ctl, tmp_path):
    federate(ctl, "https://oidc.example.invalid/issuer")
    with pytest.raises(ClientAuthenticationError, match="AADSTS50166"):
        exchange(sandbox, tmp_path, forged("https://oidc.example.invalid/issuer"))


def test_a_kube_apiserver_token_is_verified_through_its_discovery_document(sandbox, ctl, tmp_path, control_plane, kube):
    """The chain amlwire configures: the apiserver signs the service account's token, Entra fetches the issuer's
    OpenID configuration and JWKS (anonymously, as AKS serves them) and checks the signature."""
    issuer = control_plane.service_account_issuer
    core = client.CoreV1Api(kube)
    name = f"entra-{int(time.time() * 1000) % 100_000}"
    core.create_namespaced_service_account("default", {"metadata": {"name": name}})
    subject = f"system:serviceaccount:default:{name}"
    federate(ctl, issuer, subject)

    def projected(audience: str) -> str:
        request = {"spec": {"audiences": [audience], "expirationSeconds": 600}}
        return core.create_namespaced_service_account_token(name, "default", request).status.token

    with pytest.raises(ClientAuthenticationError, match="AADSTS50166"):  # not yet known: nothing is fetched
        exchange(sandbox, tmp_path, projected(AUDIENCE))
    ctl.register_issuer(issuer, control_plane.ca_file)
    assert exchange(sandbox, tmp_path, projected(AUDIENCE))
    [accepted] = ctl.exchanges()
    jwks = requests.get(f"{issuer}/openid/v1/jwks", verify=str(control_plane.ca_file), timeout=10).json()
    assert (accepted["issuer"], accepted["subject"]) == (issuer, subject)
    assert accepted["kid"] in {key["kid"] for key in jwks["keys"]}
    with pytest.raises(ClientAuthenticationError, match="AADSTS700212"):
        exchange(sandbox, tmp_path, projected("api://another-audience"))


def _get(sandbox, token: str) -> requests.Response:
    return requests.get(
        f"{sandbox.base_url}{IDENTITY_ID}?api-version=2023-01-31",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(sandbox.ca_file),
        timeout=10,
    )


def test_arm_refuses_a_token_entra_did_not_sign_or_that_expired(sandbox, ctl):
    now = int(time.time())
    claims = {"oid": OWNER_PRINCIPAL, "aud": sandbox.base_url, "iat": now, "exp": now + 3600}
    assert _get(sandbox, ctl.access_token(OWNER_PRINCIPAL, sandbox.base_url)).status_code == 200
    for token in (SigningKey().sign(claims), "eyJhbGciOiJub25lIn0.eyJvaWQiOiJ4In0.sig"):
        refused = _get(sandbox, token)
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "InvalidAuthenticationToken")
    expired = _get(sandbox, ctl.access_token(OWNER_PRINCIPAL, sandbox.base_url, expires_in=-600))
    assert (expired.status_code, expired.json()["error"]["code"]) == (401, "ExpiredAuthenticationToken")


def test_entra_publishes_the_key_its_access_tokens_verify_with(sandbox, ctl, tmp_path):
    import jwt

    federate(ctl, cluster_issuer(ctl))
    token = exchange(sandbox, tmp_path, ctl.service_account_token(CLUSTER_ID, SUBJECT))
    discovery = requests.get(
        f"{sandbox.base_url}/{TENANT}/v2.0/.well-known/openid-configuration", verify=str(sandbox.ca_file), timeout=10
    ).json()
    keys = requests.get(discovery["jwks_uri"], verify=str(sandbox.ca_file), timeout=10).json()["keys"]
    claims = jwt.decode(token, jwt.PyJWK(keys[0]).key, algorithms=["RS256"], audience=sandbox.base_url)
    assert claims["oid"] == IDENTITY_PRINCIPAL
