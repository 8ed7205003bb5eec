"""AKS, cluster extensions, role assignments, storage, faults and token exchange, via the real SDK clients."""

from __future__ import annotations

import time

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.identity import WorkloadIdentityCredential
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.kubernetesconfiguration.extensions import KubernetesConfigurationExtensionsMgmtClient
from azure.mgmt.kubernetesconfiguration.extensions import models as ext_models
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.storage import StorageManagementClient

from tests.sandbox.conftest import (
    AUDIENCE,
    BLOB_CONTRIBUTOR,
    CLUSTER_ARGS,
    CLUSTER_ID,
    IDENTITY_ID,
    IDENTITY_PRINCIPAL,
    OWNER_PRINCIPAL,
    STORAGE_ID,
    SUB,
    TENANT,
)

pytestmark = pytest.mark.sandbox


@pytest.fixture
def extensions(credential, arm):
    return KubernetesConfigurationExtensionsMgmtClient(credential, SUB, **arm)


@pytest.fixture
def authz(credential, arm):
    return AuthorizationManagementClient(credential, SUB, **arm)


def assignment(principal: str = IDENTITY_PRINCIPAL, role: str = BLOB_CONTRIBUTOR) -> RoleAssignmentCreateParameters:
    return RoleAssignmentCreateParameters(  # type: ignore[call-arg]  # flattened properties
        role_definition_id=role, principal_id=principal, principal_type="ServicePrincipal"
    )


def patch_settings(extensions, settings):
    """Start a PATCH of the example extension's configuration settings (a long-running operation)."""
    body = ext_models.PatchExtension(properties=ext_models.PatchExtensionProperties(configuration_settings=settings))
    return extensions.extensions.begin_update(*CLUSTER_ARGS, "azureml", body)


@pytest.mark.parametrize("after_delete", ["notFound", "served"])
def test_a_clusters_issuer_publishes_its_keys_while_the_cluster_exists(credential, arm, ctl, sandbox, after_delete):
    sandbox.sandbox.world.rules.deleted_cluster_issuer = after_delete
    issuer = ContainerServiceClient(credential, SUB, **arm).managed_clusters.get(*CLUSTER_ARGS[:1], "aks-robotics")
    url = issuer.oidc_issuer_profile.issuer_url
    discovery = requests.get(url + ".well-known/openid-configuration", verify=str(sandbox.ca_file), timeout=5)
    assert discovery.status_code == 200
    assert discovery.json()["issuer"] == url
    keys = requests.get(discovery.json()["jwks_uri"], verify=str(sandbox.ca_file), timeout=5).json()["keys"]
    assert [k["kty"] for k in keys] == ["RSA"]
    other = requests.get(f"{url}x/.well-known/openid-configuration", verify=str(sandbox.ca_file), timeout=5)
    assert other.status_code == (404 if after_delete == "notFound" else 200)
    ctl.delete(CLUSTER_ID)
    gone = requests.get(url + ".well-known/openid-configuration", verify=str(sandbox.ca_file), timeout=5)
    assert gone.status_code == (404 if after_delete == "notFound" else 200)


def test_managed_cluster_reports_issuer_and_workload_identity(credential, arm, ctl):
    cluster = ContainerServiceClient(credential, SUB, **arm).managed_clusters.get("rg-aks", "aks-robotics")
    assert cluster.oidc_issuer_profile.enabled is True
    assert cluster.oidc_issuer_profile.issuer_url.startswith(f"{ctl.base_url}/oic/eastus/{TENANT}/")
    assert cluster.oidc_issuer_profile.issuer_url.endswith("/")
    assert cluster.security_profile.workload_identity.enabled is True
    ctl.patch(
        CLUSTER_ID,
        {
            "properties": {
                "oidcIssuerProfile": {"enabled": False, "issuerURL": None},
                "securityProfile": {"workloadIdentity": {"enabled": False}},
            }
        },
    )
    cluster = ContainerServiceClient(credential, SUB, **arm).managed_clusters.get("rg-aks", "aks-robotics")
    assert cluster.oidc_issuer_profile.enabled is False
    assert cluster.oidc_issuer_profile.issuer_url is None
    assert cluster.security_profile.workload_identity.enabled is False


def test_extension_update_is_a_long_running_operation(extensions, ctl):
    ctl.timing(lroSeconds=0.6)
    started = time.monotonic()
    poller = patch_settings(extensions, {"identityType": "UserAssigned", "userAssignedIdentityResourceId": IDENTITY_ID})
    assert extensions.extensions.get(*CLUSTER_ARGS, "azureml").properties.provisioning_state == "Updating"
    result = poller.result()
    elapsed = time.monotonic() - started
    assert result.properties.provisioning_state == "Succeeded"
    assert result.properties.configuration_settings["identityType"] == "UserAssigned"
    assert result.properties.configuration_settings["enableTraining"] == "True"  # PATCH merges settings
    assert 0.5 < elapsed < 5, "LROs must finish on the sandbox's clock, not the SDK's 30 s default wait"
    assert ctl.counts()["GET arm.operation"] >= 2


def test_extension_resume_from_continuation_token(extensions, ctl):
    ctl.timing(lroSeconds=0.4)
    poller = patch_settings(extensions, {"a": "b"})
    token = poller.continuation_token()
    resumed = extensions.extensions.begin_update(*CLUSTER_ARGS, "azureml", None, continuation_token=token)
    time.sleep(0.5)
    assert resumed.status().lower() in ("succeeded", "inprogress")
    assert resumed.result().properties.configuration_settings["a"] == "b"


def test_extension_create_and_delete(extensions, ctl):
    extension = ext_models.Extension(
        properties=ext_models.ExtensionProperties(
            extension_type="Microsoft.AzureML.Kubernetes", configuration_settings={"enableTraining": "True"}
        )
    )
    created = extensions.extensions.begin_create(*CLUSTER_ARGS, "azureml2", extension).result()
    assert created.properties.provisioning_state == "Succeeded"
    assert created.properties.configuration_protected_settings is None
    extensions.extensions.begin_delete(*CLUSTER_ARGS, "azureml2").result()
    with pytest.raises(ResourceNotFoundError):
        extensions.extensions.get(*CLUSTER_ARGS, "azureml2")


def test_extension_operation_can_fail(extensions, ctl):
    ctl.timing(lroOutcome="Failed")
    with pytest.raises(HttpResponseError) as caught:
        patch_settings(extensions, {"x": "y"}).result()
    assert caught.value.error.code == "ExtensionOperationFailed"
    assert extensions.extensions.get(*CLUSTER_ARGS, "azureml").properties.provisioning_state == "Failed"


def test_role_assignments(authz):
    name = "0b7e0d3e-3f3e-4c1b-8f0a-0a0a0a0a0a0a"
    created = authz.role_assignments.create(STORAGE_ID, name, assignment())
    assert created.principal_id == IDENTITY_PRINCIPAL
    # the same assignment under another name: Azure says it exists
    with pytest.raises(ResourceExistsError) as caught:
        authz.role_assignments.create(STORAGE_ID, "1b7e0d3e-3f3e-4c1b-8f0a-0a0a0a0a0a0a", assignment())
    assert caught.value.error.code == "RoleAssignmentExists"
    # the same name and content again is idempotent
    assert authz.role_assignments.create(STORAGE_ID, name, assignment()).name == name
    listed = list(authz.role_assignments.list_for_scope(STORAGE_ID, filter=f"assignedTo('{IDENTITY_PRINCIPAL}')"))
    assert [a.name for a in listed] == [name]
    assert list(authz.role_assignments.list_for_scope(STORAGE_ID, filter="assignedTo('someone-else')")) == []
    authz.role_assignments.delete(STORAGE_ID, name)
    # what remains at the scope is inherited: the subscription's Owner (who runs these tests)
    assert [a.principal_id for a in authz.role_assignments.list_for_scope(STORAGE_ID)] == [OWNER_PRINCIPAL]


def test_role_assignment_needs_a_guid_name_and_an_existing_scope(authz):
    with pytest.raises(HttpResponseError) as caught:
        authz.role_assignments.create(STORAGE_ID, "not-a-guid", assignment())
    assert caught.value.error.code == "InvalidRoleAssignmentId"
    missing = STORAGE_ID.replace("stmlrobotics", "stmissing")
    with pytest.raises(ResourceNotFoundError):
        authz.role_assignments.create(missing, "2b7e0d3e-3f3e-4c1b-8f0a-0a0a0a0a0a0a", assignment())


def test_storage_shared_key_access(credential, arm, ctl):
    storage = StorageManagementClient(credential, SUB, **arm)
    assert storage.storage_accounts.get_properties("rg-ml", "stmlrobotics").allow_shared_key_access is False
    ctl.patch(STORAGE_ID, {"properties": {"allowSharedKeyAccess": None}})
    assert storage.storage_accounts.get_properties("rg-ml", "stmlrobotics").allow_shared_key_access is None


def test_throttling_is_429_with_retry_after_and_the_sdk_honours_it(credential, arm, ctl):
    ctl.add_fault(route="aks.cluster", status=429, retryAfter=1, count=1)
    with pytest.raises(HttpResponseError) as caught:
        ContainerServiceClient(credential, SUB, **arm).managed_clusters.get("rg-aks", "aks-robotics")
    assert caught.value.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "1"

    ctl.add_fault(route="aks.cluster", status=429, retryAfter=1, count=1)
    retrying = ContainerServiceClient(credential, SUB, **{**arm, "retry_total": 2})
    started = time.monotonic()
    assert retrying.managed_clusters.get("rg-aks", "aks-robotics").name == "aks-robotics"
    assert time.monotonic() - started >= 0.9


def test_injected_server_errors_and_latency(credential, arm, ctl):
    msi = ManagedServiceIdentityClient(credential, SUB, **arm)
    ctl.add_fault(route="msi.identity", method="GET", status=500, count=1)
    with pytest.raises(HttpResponseError) as caught:
        msi.user_assigned_identities.get("rg-id", "id-ml")
    assert caught.value.status_code == 500
    assert caught.value.error.code == "InternalServerError"
    ctl.add_fault(route="msi.identity", latency=0.4, count=1)
    started = time.monotonic()
    msi.user_assigned_identities.get("rg-id", "id-ml")
    assert time.monotonic() - started >= 0.4


def test_injected_lro_failure(extensions, ctl):
    ctl.add_fault(route="ext.extension", method="PATCH", lroFailed=True, count=1)
    with pytest.raises(HttpResponseError) as caught:
        patch_settings(extensions, {"x": "y"}).result()
    assert caught.value.error.code == "InjectedOperationFailure"


def test_probabilistic_faults_are_seeded(credential, arm, ctl):
    ctl.add_fault(route="msi.identity", status=503, probability=0.5)
    msi = ManagedServiceIdentityClient(credential, SUB, **arm)
    failures = 0
    for _ in range(40):
        try:
            msi.user_assigned_identities.get("rg-id", "id-ml")
        except HttpResponseError:
            failures += 1
    assert 8 <= failures <= 32


def test_a_fault_with_a_seed_replays_the_same_failures(credential, arm, ctl):
    msi = ManagedServiceIdentityClient(credential, SUB, **arm)

    def pattern() -> list[bool]:
        ctl.clear_faults()
        ctl.add_fault(route="msi.identity", status=503, probability=0.5, seed=7)
        outcomes = []
        for _ in range(24):
            try:
                msi.user_assigned_identities.get("rg-id", "id-ml")
                outcomes.append(True)
            except HttpResponseError:
                outcomes.append(False)
        return outcomes

    first = pattern()
    assert 3 <= first.count(False) <= 21
    mark = ctl.mark()
    assert pattern() == first
    met = [c["fault"] for c in ctl.calls(since=mark) if c["route"] == "msi.identity"]
    assert met == [None if ok else "503" for ok in first]  # the call log says which calls met the fault


def test_call_log_counts_calls_by_route_and_records_the_caller(credential, arm, ctl):
    ContainerServiceClient(credential, SUB, **arm).managed_clusters.get("rg-aks", "aks-robotics")
    mark = ctl.mark()
    ManagedServiceIdentityClient(credential, SUB, **arm).user_assigned_identities.get("rg-id", "id-ml")
    assert ctl.counts(since=mark) == {"GET msi.identity": 1}
    (call,) = ctl.calls(since=mark)
    assert call["caller"] == "11111111-2222-3333-4444-555555555555"
    assert "Authorization" not in str(call)


def test_unauthenticated_calls_are_refused(sandbox):
    import requests

    response = requests.get(
        f"{sandbox.base_url}{IDENTITY_ID}?api-version=2023-01-31", verify=str(sandbox.ca_file), timeout=10
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"
    assert "WWW-Authenticate" not in response.headers


def _workload_credential(sandbox, tmp_path, assertion: str) -> WorkloadIdentityCredential:
    token_file = tmp_path / "token"
    token_file.write_text(assertion)
    return WorkloadIdentityCredential(
        tenant_id=TENANT,
        client_id="3c5b0f0e-1d6e-4a7b-9c2d-5e6f7a8b9c01",
        token_file_path=str(token_file),
        authority=sandbox.base_url,
        connection_verify=str(sandbox.ca_file),
    )


def _issuer(ctl) -> str:
    return ctl.resource(CLUSTER_ID)["properties"]["oidcIssuerProfile"]["issuerURL"]


READER_ROLE = (
    f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
)


def test_workload_identity_token_exchange_needs_a_matching_credential(sandbox, arm, ctl, tmp_path):
    subject = "system:serviceaccount:amlwire-system:amlwire"
    assertion = ctl.service_account_token(CLUSTER_ID, subject)  # as the cluster's kubelet projects it
    with pytest.raises(ClientAuthenticationError, match="AADSTS70021"):
        _workload_credential(sandbox, tmp_path, assertion).get_token(sandbox.base_url + "/.default")
    ctl.create(
        f"{IDENTITY_ID}/federatedIdentityCredentials/operator",
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        {"properties": {"issuer": _issuer(ctl), "subject": subject, "audiences": [AUDIENCE]}},
        {"backdated": True},
    )
    credential = _workload_credential(sandbox, tmp_path, assertion)
    msi = ManagedServiceIdentityClient(credential, SUB, **arm)
    with pytest.raises(HttpResponseError) as refused:  # a token is not a permission: ARM authorises each call
        msi.user_assigned_identities.get("rg-id", "id-ml")
    assert refused.value.status_code == 403
    assert refused.value.error.code == "AuthorizationFailed"
    assert f"'{IDENTITY_PRINCIPAL}'" in str(refused.value)
    assert "userAssignedIdentities/read" in str(refused.value)
    ctl.create(
        f"{IDENTITY_ID}/providers/Microsoft.Authorization/roleAssignments/7c3f5e1a-0000-4000-8000-000000000001",
        "Microsoft.Authorization/roleAssignments",
        {
            "properties": {
                "roleDefinitionId": READER_ROLE,
                "principalId": IDENTITY_PRINCIPAL,
                "scope": IDENTITY_ID,
            }
        },
        {"backdated": True},
    )
    assert msi.user_assigned_identities.get("rg-id", "id-ml").client_id
    assert ctl.calls()[-1]["caller"] == IDENTITY_PRINCIPAL


def test_cloud_metadata_endpoint_serves_arm_cloud_metadata_url(sandbox):
    import requests

    clouds = requests.get(
        f"{sandbox.base_url}/metadata/endpoints?api-version=2019-05-01", verify=str(sandbox.ca_file), timeout=10
    ).json()
    assert clouds[0]["resourceManager"] == sandbox.base_url + "/"


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ({"route": "msi.identity", "status": 500}, "needs count"),
        ({"route": "msi.identity", "status": 500, "probability": 0}, "above 0 and at most 1"),
        ({"route": "msi.identities", "status": 500, "count": 1}, "no route named 'msi.identities'"),
    ],
)
def test_a_fault_that_could_never_fire_is_refused_saying_why(ctl, fault, says):
    with pytest.raises(requests.HTTPError) as caught:
        ctl.add_fault(**fault)
    assert caught.value.response.status_code == 400
    assert says in caught.value.response.json()["error"]["message"]
    assert ctl.state() is not None
