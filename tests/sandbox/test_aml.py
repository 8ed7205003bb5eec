"""AML workspace, computes, jobs and models via azure-ai-ml's MLClient — and Azure judging the wiring."""

from __future__ import annotations

import time

import pytest
import requests
from azure.ai.ml import Input, Output, command
from azure.ai.ml.entities import Environment, Model
from azure.ai.ml.exceptions import JobException
from azure.core.exceptions import HttpResponseError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters

from tests.conftest import OWNER_PRINCIPAL, wait_for
from tests.sandbox.conftest import CLUSTER_ID, STORAGE_ID, SUB, WORKSPACE_ID, StaticCredential, ml_client
from tests.sandbox.wiring import attach_compute, wire

pytestmark = pytest.mark.sandbox
IMAGE = "nvcr.io/nvidia/isaac-lab:2.1.0"
STREAM_AUTH = "ScriptExecution.StreamAccess.Authentication"
BLOB_READER = (
    f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
)


def validation_job(name: str, model: str = "azureml:isaaclab-anymal-latest:2", **overrides):
    spec = {
        "name": name,
        "command": "python scripts/eval.py --checkpoint ${{inputs.model}} --seed ${{inputs.seed}}",
        "environment": Environment(image=IMAGE),
        "compute": "k8s-gpu",
        "inputs": {"seed": 42, "model": Input(type="custom_model", path=model, mode="download")},
        "experiment_name": "isaaclab-anymal",
        "tags": {"amlwire.io/namespace": "robotics"},
    }
    spec.update(overrides)
    job = command(**spec)  # type: ignore[arg-type]  # the keyword arguments of a command job
    job.resources = {"instance_type": "gpu-1"}
    return job


def finished(ml, name):
    status = ml.jobs.get(name).status
    return status if status in ("Completed", "Failed", "Canceled") else None


def ended(ml, name: str) -> str:
    """Submit the validation job `name` and wait for its final status."""
    ml.jobs.create_or_update(validation_job(name))
    return wait_for(lambda: finished(ml, name), timeout=20)


def test_workspace_and_compute_attach_with_user_assigned_identity(ml, ctl):
    workspace = ml.workspaces.get("mlw-robotics")
    assert workspace.location == "eastus"
    attached = attach_compute(ml)
    assert attached.provisioning_state == "Succeeded"
    compute = ml.compute.get("k8s-gpu")
    assert compute.type == "kubernetes"
    assert compute.namespace == "azureml-jobs"
    assert compute.identity.type == "user_assigned"
    assert compute.identity.user_assigned_identities[0].resource_id.endswith("/userAssignedIdentities/id-ml")
    stored = ctl.resource(f"{WORKSPACE_ID}/computes/k8s-gpu")
    (assigned,) = stored["identity"]["userAssignedIdentities"].values()
    assert assigned["principalId"] == "8e2d4c6a-0b1f-4e3d-a5c7-9b8a7f6e5d02"
    ml.compute.begin_delete("k8s-gpu", action="Detach").result()
    assert ctl.resource(f"{WORKSPACE_ID}/computes/k8s-gpu") is None


def test_a_failed_compute_must_be_detached_before_reattaching(ml, ctl):
    attach_compute(ml)
    ctl.patch(f"{WORKSPACE_ID}/computes/k8s-gpu", {"properties": {"provisioningState": "Failed"}})
    with pytest.raises(HttpResponseError, match="Detach it before attaching again"):
        attach_compute(ml)


def test_job_on_unwired_compute_fails_with_stream_access_authentication(ml):
    attach_compute(ml)
    ml.jobs.create_or_update(validation_job("unwired-1"))
    assert wait_for(lambda: finished(ml, "unwired-1"), timeout=20) == "Failed"
    details = ml.jobs._runs_operations.get_run_details("unwired-1")
    assert details.error.error.code == "UserError"
    assert details.error.error.inner_error.code == STREAM_AUTH
    assert details.error.error.message.startswith(f"{STREAM_AUTH}: permission denied when access stream")
    with pytest.raises(JobException, match=STREAM_AUTH):
        ml.jobs.stream("unwired-1")


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ("role", "AuthorizationPermissionMismatch"),
        ("extension", "no user-assigned identity settings"),
        ("training-fic", "AADSTS70021"),
    ],
)
def test_each_missing_link_breaks_storage_access(credential, arm, ml, missing, reason):
    subjects = ("azureml:default",) if missing == "training-fic" else ("azureml:default", "azureml:training")
    wire(credential, arm, ml, role=missing != "role", extension=missing != "extension", subjects=subjects)
    ml.jobs.create_or_update(validation_job("broken-1"))
    assert wait_for(lambda: finished(ml, "broken-1"), timeout=20) == "Failed"
    assert reason in ml.jobs._runs_operations.get_run_details("broken-1").error.error.message


SIDECAR_CASES = [
    # (how the sidecar gets its credential, the link left out, the job's outcome, words in the error)
    ("workloadIdentity", None, "Completed", None),
    ("workloadIdentity", "extension", "Failed", "no user-assigned identity settings"),
    ("workloadIdentity", "fics", "Failed", "AADSTS70021"),
    ("workloadIdentity", "role", "Failed", "AuthorizationPermissionMismatch"),
    ("computeIdentity", None, "Completed", None),
    ("computeIdentity", "extension", "Completed", None),  # documented: the compute's identity is enough
    ("computeIdentity", "fics", "Completed", None),
    ("computeIdentity", "role", "Failed", "AuthorizationPermissionMismatch"),
    ("brokenCertificate", None, "Failed", "failed to load certificate"),  # the field report: nothing helps
]


@pytest.mark.parametrize(("mode", "missing", "outcome", "words"), SIDECAR_CASES)
def test_how_the_sidecar_gets_its_credential_decides_which_links_matter(
    credential, arm, ml, ctl, mode, missing, outcome, words
):
    ctl.patch(CLUSTER_ID, extra={"sidecar_credential": mode})
    subjects = () if missing == "fics" else ("azureml:default", "azureml:training")
    wire(credential, arm, ml, role=missing != "role", extension=missing != "extension", subjects=subjects)
    ml.jobs.create_or_update(validation_job("sidecar-1"))
    assert wait_for(lambda: finished(ml, "sidecar-1"), timeout=20) == outcome
    if words:
        assert words in ml.jobs._runs_operations.get_run_details("sidecar-1").error.error.message


def test_with_broken_certificate_auth_an_in_container_download_still_works(credential, arm, ml, ctl):
    ctl.patch(CLUSTER_ID, extra={"sidecar_credential": "brokenCertificate"})
    wire(credential, arm, ml)
    job = validation_job("in-container", inputs={"seed": 42, "model": "azureml:isaaclab-anymal-latest:2"})
    ml.jobs.create_or_update(job)
    assert wait_for(lambda: finished(ml, "in-container"), timeout=20) == "Completed"


def test_job_on_wired_compute_completes_and_streams(credential, arm, ml, capsys):
    wire(credential, arm, ml)
    created = ml.jobs.create_or_update(validation_job("wired-1"))
    assert created.status == "NotStarted"
    assert created.studio_url.startswith("https://ml.azure.com/runs/wired-1")
    ml.jobs.stream("wired-1")
    assert "wired-1" in capsys.readouterr().out
    assert ml.jobs.get("wired-1").status == "Completed"


def test_role_assignment_grants_access_only_after_propagation(credential, arm, ml, ctl):
    ctl.timing(rolePropagationSeconds=30)
    wire(credential, arm, ml)
    assert ended(ml, "too-early") == "Failed"
    ctl.timing(rolePropagationSeconds=0)
    assert ended(ml, "after-propagation") == "Completed"


def test_job_state_machine_is_observable(credential, arm, ml, ctl):
    ctl.timing(job={"queuedSeconds": 0.6, "runningSeconds": 0.6})
    wire(credential, arm, ml)
    ml.jobs.create_or_update(validation_job("stages"))
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not seen or seen[-1] not in ("Completed", "Failed")):
        status = ml.jobs.get("stages").status
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.05)
    walk = ["NotStarted", "Starting", "Preparing", "Queued", "Running", "Finalizing", "Completed"]
    seen = [getattr(s, "value", s) for s in seen]
    assert seen == [w for w in walk if w in seen]  # in order
    assert {"Starting", "Preparing", "Queued", "Running", "Completed"} <= set(seen)


def test_a_job_can_stop_responding_and_come_back(credential, arm, ml, ctl):
    ctl.timing(job={"queuedSeconds": 0.1, "runningSeconds": 0.6})
    ctl.add_job_rule({"name": "flaky"}, interruptions=[{"status": "NotResponding", "after": 0.1, "seconds": 0.6}])
    wire(credential, arm, ml)
    ml.jobs.create_or_update(validation_job("flaky"))
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not seen or seen[-1] != "Completed"):
        status = ml.jobs.get("flaky").status
        status = getattr(status, "value", status)
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.05)
    assert seen[seen.index("NotResponding") - 1 : seen.index("NotResponding") + 2] == [
        "Running",
        "NotResponding",
        "Running",
    ]
    assert seen[-1] == "Completed"


def test_cancel(credential, arm, ml, ctl):
    ctl.timing(job={"queuedSeconds": 0.1, "runningSeconds": 30})
    wire(credential, arm, ml)
    ml.jobs.create_or_update(validation_job("long"))
    wait_for(lambda: ml.jobs.get("long").status == "Running", timeout=10)
    ml.jobs.begin_cancel("long").result()
    assert wait_for(lambda: finished(ml, "long"), timeout=10) == "Canceled"


def test_list_pages_through_next_links(credential, arm, ml, ctl):
    ctl.timing(pageSize=2)
    wire(credential, arm, ml)
    for index in range(5):
        ml.jobs.create_or_update(validation_job(f"many-{index}"))
    mark = ctl.mark()
    listed = [j.name for j in ml.jobs.list()]
    assert sorted(listed) == [f"many-{i}" for i in range(5)]  # each once, across the pages
    assert listed != [f"many-{i}" for i in reversed(range(5))]  # in no particular order (seeded)
    assert [j.name for j in ml.jobs.list()] == listed  # the same order for the same jobs
    assert ctl.counts(since=mark)["GET ml.job.list"] == 6
    ctl.patch(f"{WORKSPACE_ID}/jobs/many-2", {"properties": {"isArchived": True}})
    assert "many-2" not in [j.name for j in ml.jobs.list()]  # the SDK lists ActiveOnly
    assert ml.jobs.get("many-2").name == "many-2"  # still there, asked directly


def test_per_job_rules_control_outcome_and_metrics(credential, arm, ml, ctl):
    wire(credential, arm, ml)
    ctl.add_job_rule({"name": "ruled"}, outcome="Failed", error={"code": "UserError", "message": "CUDA OOM"})
    assert ended(ml, "ruled") == "Failed"
    assert ml.jobs._runs_operations.get_run_details("ruled").error.error.message == "CUDA OOM"


def _signed_in(sandbox, credential, method, path, **kwargs):
    """A plain HTTPS request to the sandbox with an ARM token, for what no SDK call sends."""
    token = credential.get_token(sandbox.base_url + "/.default").token
    return requests.request(
        method,
        sandbox.base_url + path,
        headers={"Authorization": f"Bearer {token}"},
        verify=str(sandbox.ca_file),
        timeout=10,
        **kwargs,
    )


def _mlflow_run(sandbox, credential, name):
    """The job's run as the workspace's MLflow tracking server answers runs/get."""
    path = f"/mlflow/v1.0{WORKSPACE_ID}/api/2.0/mlflow/runs/get"
    response = _signed_in(sandbox, credential, "GET", path, params={"run_id": name})
    response.raise_for_status()
    return response.json()["run"]


def _mlflow_metrics(sandbox, credential, name):
    return {m["key"]: m["value"] for m in _mlflow_run(sandbox, credential, name)["data"]["metrics"]}


def _mlflow_run_info(sandbox, credential, name):
    return _mlflow_run(sandbox, credential, name)["info"]


def _epoch_ms(moment) -> int:
    return int(moment.timestamp() * 1000)


def test_a_runs_mlflow_info_says_when_it_started_and_ended_as_run_history_does(sandbox, credential, arm, ml):
    wire(credential, arm, ml)
    ml.jobs.create_or_update(validation_job("timed"))
    running = wait_for(lambda: _mlflow_run_info(sandbox, credential, "timed").get("start_time"), timeout=20)
    assert wait_for(lambda: finished(ml, "timed"), timeout=20) == "Completed"
    info = _mlflow_run_info(sandbox, credential, "timed")
    history = ml.jobs._runs_operations.get_run_details("timed")
    assert info["status"] == "FINISHED"
    assert abs(info["start_time"] - _epoch_ms(history.start_time_utc)) <= 1  # run history says microseconds
    assert abs(info["end_time"] - _epoch_ms(history.end_time_utc)) <= 1
    assert running == info["start_time"] < info["end_time"]


def test_validation_metrics_come_from_the_model_evaluated(sandbox, credential, arm, ml):
    wire(credential, arm, ml)
    ml.jobs.create_or_update(validation_job("strong"))
    ml.jobs.create_or_update(validation_job("weak", model="azureml:isaaclab-anymal-weak:1"))
    for name in ("strong", "weak"):
        assert wait_for(lambda name=name: finished(ml, name), timeout=20) == "Completed"
    assert _mlflow_metrics(sandbox, credential, "strong")["success_rate"] == 0.94
    assert _mlflow_metrics(sandbox, credential, "weak")["success_rate"] == 0.41


def trained(credential, arm, ml, name: str) -> str:
    """Wire the compute, run a training job to completion; the path AML reports for its checkpoint output."""
    wire(credential, arm, ml)
    job = command(
        name=name,
        command="python train.py",
        environment=Environment(image=IMAGE),
        compute="k8s-gpu",
        outputs={"checkpoint": Output(type="custom_model")},
    )
    ml.jobs.create_or_update(job)
    assert wait_for(lambda: finished(ml, name), timeout=20) == "Completed"
    return ml.jobs.get(name).outputs["checkpoint"].path


def test_training_output_registers_as_a_model(credential, arm, ml):
    reported = trained(credential, arm, ml, "train-1")
    short = "azureml://jobs/train-1/outputs/checkpoint"  # the undocumented form: refused
    with pytest.raises(HttpResponseError, match="Invalid model path"):
        ml.models.create_or_update(Model(name="isaaclab-anymal-latest", type="custom_model", path=short))
    assert reported == "azureml://datastores/workspaceblobstore/paths/azureml/train-1/checkpoint/"
    model = ml.models.create_or_update(Model(name="isaaclab-anymal-latest", type="custom_model", path=reported))
    assert model.version == "3"
    again = ml.models.get("isaaclab-anymal-latest", "3")
    assert again.path.endswith("paths/azureml/train-1/checkpoint/")


def test_a_model_registered_from_a_job_downloads_again(sandbox, credential, arm, blob_dns, tmp_path):
    """What an InContainer job does (templates/fetch_model.py): MLClient.models.download reads the version, the
    datastore, then the blobs the training job wrote, with a Storage Blob Data role."""
    ml = ml_client(sandbox, "Download", credential, storage=True)
    reported = trained(credential, arm, ml, "train-2")
    model = ml.models.create_or_update(Model(name="anymal-trained", type="custom_model", path=reported))
    with pytest.raises(Exception, match="AuthorizationPermissionMismatch"):  # Owner is no data role
        ml.models.download(model.name, model.version, download_path=tmp_path)
    AuthorizationManagementClient(credential, SUB, **arm).role_assignments.create(
        STORAGE_ID,
        "6c8f1e4f-4a4f-4d2c-9a1b-1b1b1b1b1b1b",
        RoleAssignmentCreateParameters(
            role_definition_id=BLOB_READER, principal_id=OWNER_PRINCIPAL, principal_type="User"
        ),
    )
    ml.models.download(model.name, model.version, download_path=tmp_path)
    downloaded = tmp_path / "anymal-trained" / "checkpoint" / "model_100.pt"
    assert downloaded.read_text() == "a checkpoint written by a sandbox job\n"


def test_submission_rules(sandbox, credential, ml):
    attach_compute(ml)
    with pytest.raises(Exception, match="isaaclab-missing:9 was not found"):
        ml.jobs.create_or_update(validation_job("no-model", model="azureml:isaaclab-missing:9"))
    with pytest.raises(Exception, match=r"Compute .* was not found"):
        ml.jobs.create_or_update(validation_job("no-compute", compute="nope"))
    body = {
        "properties": {
            "jobType": "Command",
            "command": "echo",
            "environmentId": "azureml:x",
            "computeId": f"{WORKSPACE_ID}/computes/k8s-gpu",
            "inputs": {"note": {"jobInputType": "literal", "value": ""}},
        }
    }
    response = _signed_in(
        sandbox, credential, "PUT", f"{WORKSPACE_ID}/jobs/empty-input?api-version=2024-04-01", json=body
    )
    assert response.status_code == 400
    assert "Empty string is not allowed for input value" in response.json()["error"]["message"]


def test_a_deleted_role_assignment_keeps_granting_until_the_removal_propagates(credential, arm, ml, ctl):
    from azure.mgmt.authorization import AuthorizationManagementClient

    wire(credential, arm, ml)
    authorization = AuthorizationManagementClient(credential, SUB, **arm).role_assignments
    storage = next(a for a in authorization.list_for_scope(STORAGE_ID) if a.scope.lower() == STORAGE_ID.lower())
    ctl.patch(storage.id, extra={"backdated": True})  # granted long ago
    ctl.timing(rolePropagationSeconds=30)
    authorization.delete(STORAGE_ID, storage.name)  # through ARM: a removal takes effect minutes later
    assert ended(ml, "just-after-removal") == "Completed"
    ctl.timing(rolePropagationSeconds=0)
    assert ended(ml, "after-removal") == "Failed"


def test_the_blob_plane_answers_as_storage_does(sandbox, credential, arm, blob_dns):
    """A missing container is ContainerNotFound; a missing account does not resolve; a token for another
    audience is refused (rule storage.blob-errors)."""
    import socket

    from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError
    from azure.storage.blob import BlobServiceClient

    AuthorizationManagementClient(credential, SUB, **arm).role_assignments.create(
        STORAGE_ID,
        "6c8f1e4f-4a4f-4d2c-9a1b-1b1b1b1b1b1c",
        RoleAssignmentCreateParameters(role_definition_id=BLOB_READER, principal_id=OWNER_PRINCIPAL),
    )
    url = f"https://stmlrobotics.blob.{sandbox.storage_endpoint}"
    service = BlobServiceClient(url, credential, connection_verify=str(sandbox.ca_file), retry_total=0)
    with pytest.raises(ResourceNotFoundError) as missing:
        list(service.get_container_client("no-such-container").list_blobs())
    assert missing.value.error_code == "ContainerNotFound"
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(f"stnosuchaccount.blob.{sandbox.storage_endpoint.split(':')[0]}", 443)
    nowhere = BlobServiceClient(f"https://stnosuchaccount.blob.{sandbox.storage_endpoint}", credential, retry_total=0)
    with pytest.raises(ServiceRequestError):
        list(nowhere.get_container_client("c").list_blobs())

    arm_token = StaticCredential(sandbox, audience=sandbox.base_url)  # a token for ARM, sent to storage
    wrong = BlobServiceClient(url, arm_token, connection_verify=str(sandbox.ca_file), retry_total=0)
    with pytest.raises(Exception, match="InvalidAuthenticationInfo"):
        list(wrong.get_container_client("no-such-container").list_blobs())
