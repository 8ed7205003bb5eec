"""amlwire doctor on a job's data path, on any compute: the field story "the pipeline fails in 30 seconds with
AuthorizationPermissionMismatch and no child jobs" reproduced in the sandbox, named by the doctor, fixed with
the command it prints; and each other data-path failure alone makes exactly its id fail."""

from __future__ import annotations

import base64
import json
import shlex
import uuid
from typing import Any

import pytest
from azure.ai.ml._restclient.arm_ml_service import MachineLearningServicesMgmtClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
from click.testing import CliRunner

from amlwire.cli.main import cli
from amlwire.domain.access import ROLE_GUIDS
from amlwire.domain.permissions import PERMISSIONS
from amlwire_sandbox.world import (
    ComputeIdentityWorld,
    ComputeWorld,
    DatastoreWorld,
    IdentityWorld,
    PrivateEndpointWorld,
    RoleAssignmentWorld,
    StorageAccountWorld,
    WorkspaceIdentity,
    WorkspaceWorld,
    World,
)
from tests.conftest import OWNER_PRINCIPAL, wait_for
from tests.e2e import harness as e2e
from tests.e2e.harness import RG, SUB, Harness
from tests.sandbox.conftest import StaticCredential

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]

TEAM_PRINCIPAL = "5d1e7c10-0000-4000-8000-0000000000a1"  # mlw-team's system-assigned identity
TEAM_ID = f"{RG}/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw-team"
TEAM_STORAGE = f"{RG}/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlteam"
OLD_ID = f"{RG}/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw-old"
JOBS_UAMI = f"{RG}/rg-ml/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-jobs"
JOBS_UAMI_PRINCIPAL = "6e2f8d21-0000-4000-8000-0000000000b2"
VNET_A = f"{RG}/rg-net/providers/Microsoft.Network/virtualNetworks/vnet-a/subnets/compute"
VNET_B = f"{RG}/rg-net/providers/Microsoft.Network/virtualNetworks/vnet-b/subnets/compute"
ROLE = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"


def team_world() -> World:
    """The demo world plus the story's two workspaces: mlw-team (identity-based datastores, its workspace
    identity holding Storage Blob Data Contributor, compute clusters) and mlw-old (a key-based default datastore
    with no key, on an account with shared keys off)."""
    world = e2e.test_world()
    world.identities.append(
        IdentityWorld(
            resource_group="rg-ml", name="id-jobs", client_id=str(uuid.uuid4()), principal_id=JOBS_UAMI_PRINCIPAL
        )
    )
    world.storage_accounts += [
        StorageAccountWorld(resource_group="rg-ml", name="stmlteam", allow_shared_key_access=False),
        StorageAccountWorld(resource_group="rg-ml", name="stmlold", allow_shared_key_access=False),
        StorageAccountWorld(resource_group="rg-ml", name="stmlkeyed", allow_shared_key_access=True),
        StorageAccountWorld(
            resource_group="rg-ml",
            name="stmlprivate",
            public_network_access="Disabled",
            private_endpoints=[
                PrivateEndpointWorld(name="pe-stmlprivate-blob", subnet=VNET_A.replace("/compute", "/endpoints"))
            ],
        ),
    ]
    system = ComputeIdentityWorld(type="SystemAssigned")
    world.workspaces += [
        WorkspaceWorld(
            resource_group="rg-ml",
            name="mlw-team",
            storage_account="stmlteam",
            identity=WorkspaceIdentity(principal_id=TEAM_PRINCIPAL),
            computes=[
                ComputeWorld(name="cpu", identity=system),
                ComputeWorld(name="cpu-noid"),
                ComputeWorld(
                    name="cpu-uami",
                    identity=ComputeIdentityWorld(type="UserAssigned", user_assigned_identities=[JOBS_UAMI]),
                ),
                ComputeWorld(
                    name="cpu-both",
                    identity=ComputeIdentityWorld(
                        type="SystemAssigned,UserAssigned", user_assigned_identities=[JOBS_UAMI]
                    ),
                ),
                ComputeWorld(name="cpu-a", identity=system, subnet=VNET_A),
                ComputeWorld(name="cpu-b", identity=system, subnet=VNET_B),
            ],
            datastores=[
                DatastoreWorld(name="keyed", storage_account="stmlkeyed", credentials="AccountKey"),
                DatastoreWorld(name="private", storage_account="stmlprivate"),
            ],
        ),
        WorkspaceWorld(
            resource_group="rg-ml",
            name="mlw-old",
            storage_account="stmlold",
            system_datastores_auth_mode="accesskey",
            system_datastore_secret="empty",
            identity=WorkspaceIdentity(principal_id="5d1e7c10-0000-4000-8000-0000000000a3"),
            computes=[ComputeWorld(name="cpu-old", identity=system)],
        ),
    ]
    world.role_assignments.append(  # the team granted the role to the workspace identity, and waited
        RoleAssignmentWorld(
            scope=TEAM_STORAGE,
            role_definition_id=ROLE + ROLE_GUIDS["Storage Blob Data Contributor"],
            principal_id=TEAM_PRINCIPAL,
        )
    )
    return world


@pytest.fixture
def team(control_plane, cluster, tmp_path):
    h = Harness(control_plane, cluster, tmp_path, team_world())
    reader = next(p for p in PERMISSIONS if p.role == "Reader")
    h.grant(f"/subscriptions/{SUB}", reader)  # who runs the doctor reads the subscription (role assignments, roles)
    try:
        yield h
    finally:
        h.close()


def arm(harness: Harness) -> dict[str, Any]:
    return {
        "base_url": harness.sandbox.base_url,
        "credential_scopes": [harness.sandbox.base_url + "/.default"],
        "connection_verify": str(harness.sandbox.ca_file),
        "retry_total": 0,
    }


def submit(harness: Harness, workspace: str, body: dict[str, Any]) -> str:
    """Submit a job as the team's user (the subscription's Owner), through AML's own REST client."""
    name = f"job-{uuid.uuid4().hex[:8]}"
    client = MachineLearningServicesMgmtClient(StaticCredential(harness.sandbox, OWNER_PRINCIPAL), SUB, **arm(harness))
    client.jobs.create_or_update("rg-ml", workspace, name, body)
    return name


def pipeline(compute: str, identity: str | None = None, workspace: str = TEAM_ID) -> dict[str, Any]:
    """Two steps: prepare writes to the default datastore, train reads it (what a studio pipeline does)."""
    step = {"type": "command", "command": "python prep.py", "environmentId": "azureml:sklearn:1"}
    body: dict[str, Any] = {
        "jobType": "Pipeline",
        "settings": {"default_compute": f"{workspace}/computes/{compute}"},
        "jobs": {
            "prepare": {**step, "outputs": {"prepared": {"job_output_type": "uri_folder"}}},
            "train": {
                **step,
                "inputs": {
                    "data": {
                        "job_input_type": "uri_folder",
                        "uri": "azureml://datastores/workspaceblobstore/paths/raw/",
                    }
                },
                "outputs": {"model": {"job_output_type": "uri_folder"}},
            },
        },
    }
    if identity:
        body["identity"] = {"identityType": identity}
    return {"properties": body}


def command(compute: str | None, uri: str, identity: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobType": "Command",
        "command": "python train.py",
        "environmentId": "azureml:sklearn:1",
        "inputs": {"data": {"jobInputType": "uri_folder", "uri": uri}},
    }
    if compute:
        body["computeId"] = f"{TEAM_ID}/computes/{compute}"
    if identity:
        body["identity"] = {"identityType": identity}
    return {"properties": body}


def finished(harness: Harness, workspace_id: str, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = next((j for j in harness.ctl.jobs() if j["name"] == name), None)
        return job if job and job["status"] in ("Completed", "Failed", "Canceled") else None

    return wait_for(done, timeout=20, what=f"job {name} finished")


def doctor(
    harness: Harness, monkeypatch, *args: str, workspace: str = "mlw-team", output: str = "json", propagation: int = 0
) -> tuple[int, Any]:
    for key, value in {
        **harness.azure_environment(),
        "AMLWIRE_ARM_ENDPOINT": harness.sandbox.base_url,
        "AMLWIRE_CA_BUNDLE": str(harness.sandbox.ca_file),
        "AMLWIRE_KUBECONFIG": str(harness.plane.viewer_kubeconfig),
        "AMLWIRE_ROLE_PROPAGATION_SECONDS": str(propagation),
        "AZURE_SUBSCRIPTION_ID": SUB,
    }.items():
        monkeypatch.setenv(key, value)
    argv = ["doctor", "--workspace-group", "rg-ml", "--workspace", workspace, *args, "--output", output]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    if output == "table":
        return result.exit_code, result.output
    try:
        return result.exit_code, json.loads(result.output)
    except json.JSONDecodeError:
        return result.exit_code, {"output": result.output}


def failing(report: dict[str, Any]) -> list[str]:
    return [r["id"] for r in report["results"] if r["status"] == "fail"]


def result_of(report: dict[str, Any], id_: str) -> dict[str, Any]:
    return next(r for r in report["results"] if r["id"] == id_)


def run_az_role_assignment(harness: Harness, command_line: str) -> None:
    """What the user does with the doctor's fix: `az role assignment create ...`, as the subscription's Owner."""
    words = shlex.split(command_line)
    assert words[:4] == ["az", "role", "assignment", "create"], command_line
    flags = dict(zip(words[4::2], words[5::2], strict=True))
    client = AuthorizationManagementClient(StaticCredential(harness.sandbox, OWNER_PRINCIPAL), SUB, **arm(harness))
    client.role_assignments.create(
        flags["--scope"],
        str(uuid.uuid4()),
        RoleAssignmentCreateParameters(
            role_definition_id=ROLE + ROLE_GUIDS[flags["--role"]],
            principal_id=flags["--assignee-object-id"],
            principal_type=flags["--assignee-principal-type"],
        ),
    )


def compute_principal(harness: Harness, compute: str) -> str:
    return str(harness.ctl.require(f"{TEAM_ID}/computes/{compute}")["identity"]["principalId"])


# -- the story --------------------------------------------------------------------------------------------
def test_the_pipeline_that_fails_in_seconds_is_named_fixed_and_then_passes(team, monkeypatch):
    name = submit(team, "mlw-team", pipeline("cpu"))
    job = finished(team, TEAM_ID, name)
    assert job["status"] == "Failed"
    assert "AuthorizationPermissionMismatch" in str(job["error"])
    assert [j["name"] for j in team.ctl.jobs()] == [name], "no child job ran"

    mark = team.ctl.mark()
    code, report = doctor(team, monkeypatch, "--job", name)
    assert code == 1, report
    first = result_of(report, failing(report)[0])
    principal = compute_principal(team, "cpu")
    assert first["id"] == "F24"
    assert principal in first["headline"]
    assert "stmlteam" in first["headline"]
    expected = (
        f"az role assignment create --assignee-object-id {principal} --assignee-principal-type ServicePrincipal "
        f'--role "Storage Blob Data Contributor" --scope {TEAM_STORAGE}'
    )
    assert first["headline"].endswith(expected)
    assert first["fix"] == expected
    assert failing(report) == ["F24", "F25"]  # and the role the team granted sits on the workspace identity
    assert TEAM_PRINCIPAL in str(result_of(report, "F25")["evidence"])
    assert team.ctl.writes(since=mark) == [], "the doctor only reads"

    code, table = doctor(team, monkeypatch, "--job", name, output="table")
    first_failure = next(line for line in table.splitlines() if line.startswith("✗"))
    assert first_failure.startswith("✗ F24")
    assert principal in first_failure
    assert expected in first_failure

    run_az_role_assignment(team, first["fix"])
    again = submit(team, "mlw-team", pipeline("cpu"))
    assert finished(team, TEAM_ID, again)["status"] == "Completed"
    code, report = doctor(team, monkeypatch, "--job", again)
    assert code == 0, failing(report)
    code, report = doctor(team, monkeypatch, "--compute", "cpu", "--job-identity", "managed")
    assert code == 0, failing(report)


def test_a_pipeline_step_with_its_own_identity_is_judged_with_it(team, monkeypatch):
    """azure-ai-ml sends a step's identity in snake_case on the step: `prepare` writes as id-jobs while the
    pipeline reads as the compute's system identity, which holds its role. The doctor blames id-jobs only."""
    system = compute_principal(team, "cpu-both")
    run_az_role_assignment(
        team,
        f"az role assignment create --assignee-object-id {system} --assignee-principal-type ServicePrincipal "
        f'--role "Storage Blob Data Contributor" --scope {TEAM_STORAGE}',
    )
    body = pipeline("cpu-both")
    client_id = team.ctl.resource(JOBS_UAMI)["properties"]["clientId"]
    body["properties"]["jobs"]["prepare"]["identity"] = {"client_id": client_id, "identity_type": "Managed"}
    name = submit(team, "mlw-team", body)
    assert "AuthorizationPermissionMismatch" in str(finished(team, TEAM_ID, name)["error"])
    _, report = doctor(team, monkeypatch, "--job", name)
    f24 = result_of(report, "F24")
    assert failing(report)[0] == "F24"
    assert f"--assignee-object-id {JOBS_UAMI_PRINCIPAL} " in f24["fix"]
    assert system not in f24["fix"]
    assert f24["evidence"]["datastore workspaceblobstore (step train) on stmlteam"] == "needs write: role held"
    assert f24["evidence"]["datastore workspaceblobstore (step prepare) on stmlteam"] == "needs write: no role"
    run_az_role_assignment(team, f24["fix"])
    again = submit(team, "mlw-team", body)
    assert finished(team, TEAM_ID, again)["status"] == "Completed"
    code, report = doctor(team, monkeypatch, "--job", again)
    assert code == 0, failing(report)


def test_a_young_assignment_is_named_with_when_it_takes_effect(team, monkeypatch):
    _, report = doctor(team, monkeypatch, "--compute", "cpu")
    run_az_role_assignment(team, result_of(report, "F24")["fix"])
    _, report = doctor(team, monkeypatch, "--compute", "cpu", propagation=3600)
    assert failing(report) == ["F16"]
    assert "retry after" in result_of(report, "F16")["fix"]


def test_the_old_workspace_with_an_empty_key_datastore_is_named_unfixable_in_place(team, monkeypatch):
    # the compute's identity may fetch the stored key (datastores/listsecrets/action), as the team granted
    principal = team.ctl.resource(f"{OLD_ID}/computes/cpu-old")["identity"]["principalId"]
    team.grant(OLD_ID, next(p for p in PERMISSIONS if p.role == "AzureML Data Scientist"), principal)
    name = submit(team, "mlw-old", pipeline("cpu-old", workspace=OLD_ID))
    job = finished(team, OLD_ID, name)
    assert job["status"] == "Failed"
    assert "KeyBasedAuthenticationNotPermitted" in str(job["error"])

    mark = team.ctl.mark()
    code, report = doctor(team, monkeypatch, "--job", name, workspace="mlw-old")
    assert code == 1
    assert failing(report) == ["F17", "F26"]
    empty = result_of(report, "F26")
    assert "cannot be repaired in place" in empty["headline"]
    assert "az ml workspace create" in empty["fix"]
    assert "--system-datastores-auth-mode identity" in empty["fix"]
    assert "az ml workspace create" in result_of(report, "F17")["fix"]  # the only way out for a default datastore
    secrets = [c for c in team.ctl.calls(since=mark) if c["method"] != "GET"]
    assert {(c["method"], c["route"]) for c in secrets} <= {("POST", "ml.datastore.secrets"), ("POST", "entra.token")}


# -- each other failure alone ------------------------------------------------------------------------------
def test_a_compute_without_identity_for_a_managed_identity_job(team, monkeypatch):
    name = submit(
        team, "mlw-team", command("cpu-noid", "azureml://datastores/workspaceblobstore/paths/raw/", "Managed")
    )
    assert "ComputeIdentityNotFound" in str(finished(team, TEAM_ID, name)["error"])
    _, report = doctor(team, monkeypatch, "--job", name)
    assert failing(report) == ["F27"]
    assert "az ml compute update --name cpu-noid" in result_of(report, "F27")["fix"]
    assert result_of(report, "F24")["status"] == "skip"


def test_user_identity_reads_as_the_submitting_user(team, monkeypatch):
    name = submit(
        team, "mlw-team", command("cpu", "azureml://datastores/workspaceblobstore/paths/raw/", "UserIdentity")
    )
    assert finished(team, TEAM_ID, name)["status"] == "Failed"
    _, report = doctor(team, monkeypatch, "--job", name)
    assert result_of(report, "F24")["status"] == "skip"  # who the user is: the job names no object ID
    assert "--user" in result_of(report, "F24")["why"]
    code, report = doctor(team, monkeypatch, "--job", name, "--user", OWNER_PRINCIPAL)
    f24 = result_of(report, "F24")
    assert f24["status"] == "fail"
    assert "--assignee-principal-type User" in f24["fix"]
    run_az_role_assignment(team, f24["fix"])
    again = submit(
        team, "mlw-team", command("cpu", "azureml://datastores/workspaceblobstore/paths/raw/", "UserIdentity")
    )
    assert finished(team, TEAM_ID, again)["status"] == "Completed"
    code, report = doctor(team, monkeypatch, "--job", again, "--user", OWNER_PRINCIPAL)
    assert code == 0, failing(report)


def test_serverless_reads_as_the_user_by_default(team, monkeypatch):
    code, report = doctor(team, monkeypatch, "--compute", "serverless", "--user", OWNER_PRINCIPAL)
    assert "serverless default" in str(result_of(report, "F24")["evidence"])
    run_az_role_assignment(team, result_of(report, "F24")["fix"])
    name = submit(team, "mlw-team", command(None, "azureml://datastores/workspaceblobstore/paths/raw/"))
    assert finished(team, TEAM_ID, name)["status"] == "Completed"
    code, report = doctor(team, monkeypatch, "--compute", "serverless", "--user", OWNER_PRINCIPAL)
    assert code == 0, failing(report)


def test_whoever_fetches_a_stored_credential_may_list_secrets(team, monkeypatch):
    """A key-based datastore is read by fetching its key: the job fails with 403 naming listsecrets when the
    compute's identity may not, and the doctor names that identity next to the user who uploads."""
    user = "7f3a9e32-0000-4000-8000-0000000000c4"
    name = submit(team, "mlw-team", command("cpu", "azureml://datastores/keyed/paths/raw/"))
    job = finished(team, TEAM_ID, name)
    assert job["status"] == "Failed"
    assert "datastores/listsecrets/action" in str(job["error"])
    _, report = doctor(team, monkeypatch, "--job", name, "--user", user)
    f28 = result_of(report, "F28")
    assert f28["status"] == "fail"
    principal = compute_principal(team, "cpu")
    assert f"--assignee-object-id {user} --assignee-principal-type User" in f28["fix"]
    assert f"--assignee-object-id {principal} --assignee-principal-type ServicePrincipal" in f28["fix"]
    assert "AzureML Data Scientist" in f28["fix"]
    for fix in f28["fix"].split("; "):
        run_az_role_assignment(team, fix)
    again = submit(team, "mlw-team", command("cpu", "azureml://datastores/keyed/paths/raw/"))
    assert finished(team, TEAM_ID, again)["status"] == "Completed"
    code, report = doctor(team, monkeypatch, "--job", again, "--user", user)
    assert code == 0, failing(report)
    assert result_of(report, "F26")["status"] == "pass"  # the key is there, never shown
    stored = base64.b64encode(f"{TEAM_ID}/datastores/keyed".encode()).decode()
    assert stored not in json.dumps(report)


@pytest.mark.parametrize(("compute", "outcome"), [("cpu-b", "Failed"), ("cpu-a", "Completed")])
def test_storage_closed_to_the_compute_network(team, monkeypatch, compute, outcome):
    grant = (
        f"az role assignment create --assignee-object-id {compute_principal(team, compute)} --assignee-principal-type "
        f'ServicePrincipal --role "Storage Blob Data Contributor" --scope {RG}/rg-ml/providers/Microsoft.Storage/'
        "storageAccounts/stmlprivate"
    )
    run_az_role_assignment(team, grant)
    run_az_role_assignment(team, grant.replace("stmlprivate", "stmlteam"))
    name = submit(team, "mlw-team", command(compute, "azureml://datastores/private/paths/raw/"))
    job = finished(team, TEAM_ID, name)
    assert job["status"] == outcome
    code, report = doctor(team, monkeypatch, "--job", name)
    if outcome == "Failed":
        assert "AuthorizationFailure" in str(job["error"])
        assert failing(report) == ["F29"]
        assert "az network private-endpoint create" in result_of(report, "F29")["fix"]
    else:
        assert code == 0, failing(report)


def test_a_named_user_assigned_identity_on_the_compute(team, monkeypatch):
    _code, report = doctor(team, monkeypatch, "--compute", "cpu-uami", "--job-identity", "managed")
    f24 = result_of(report, "F24")
    assert JOBS_UAMI_PRINCIPAL in f24["headline"]
    assert "id-jobs" in str(f24["evidence"])


def test_a_target_that_does_not_exist_cannot_run(team, monkeypatch):
    code, report = doctor(team, monkeypatch, "--compute", "no-such")
    assert code == 2
    assert "compute no-such does not exist" in report["output"]
    code, report = doctor(team, monkeypatch, "--job", "no-such-job")
    assert code == 2
    assert "no-such-job does not exist" in report["output"]
    code, report = doctor(team, monkeypatch, "--compute", "cpu", "--datastore", "nope")
    assert code == 2
    assert "datastore nope does not exist" in report["output"]
    assert "workspaceblobstore" in report["output"]


def test_a_compute_amlwire_wired_raises_no_false_alarm(team, monkeypatch):
    """The Kubernetes compute amlwire attached: its identity reads the workspace's datastores (the example's
    grants), nothing fails, nothing is written."""
    team.wired()
    team.stop()
    mark = team.ctl.mark()
    code, report = doctor(
        team, monkeypatch, "--compute", "k8s-gpu", "--job-identity", "managed", workspace="mlw-robotics"
    )
    assert code == 0, [(r["id"], r["evidence"]) for r in report["results"] if r["status"] == "fail"]
    assert {r["status"] for r in report["results"]} == {"pass"}
    assert "the identity the Kubernetes compute was attached with" in str(result_of(report, "F27")["evidence"])
    assert team.ctl.writes(since=mark) == []
