"""Table tests of the AmlJob domain: names, generated commands, requests, verdicts, hints, summaries."""

from __future__ import annotations

import base64
import re

import pytest

from amlwire.api.amljob import AmlJobSpec, FailureStatus, GateSpec
from amlwire.domain.jobs import (
    STREAM_AUTH,
    JobRequest,
    aml_job_name,
    build_command,
    build_request,
    failure,
    failure_code,
    hint,
    job_summary,
    verdict,
)
from amlwire.domain.view import WIRING_CONDITIONS, ComputeHealth
from amlwire.sandbox.jobs import stream_access_error
from amlwire.sandbox.world import STREAM_ACCESS_SHAPES
from amlwire.templates.fetch_model import parse_model, parse_workspace
from tests.conftest import example

UID = "3f2a9c1e-1111-2222-3333-444455556666"
WS = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"


def spec(name: str, **changes) -> AmlJobSpec:
    return AmlJobSpec.model_validate(example(name, **changes))


def validate_request(delivery: str) -> JobRequest:
    """The request of the validation example with model m:2 delivered as `delivery`."""
    job = spec("amljob-validate.yaml", model={"name": "m", "version": "2", "delivery": delivery})
    return build_request(job, "robotics", "v", UID, "k8s-gpu", "robotics-gpu", WS)


@pytest.mark.parametrize("name", ["anymal-train-7", "a.b.c", "x" * 253])
def test_aml_job_names_are_valid_and_derived_from_the_uid(name):
    job = aml_job_name(name, UID)
    assert re.fullmatch(r"[a-zA-Z0-9][\w-]{0,254}", job)
    assert job.endswith("-3f2a9c1e1111")
    assert job == aml_job_name(name, UID)
    assert job != aml_job_name(name, UID.replace("3f", "4f"))


@pytest.mark.parametrize("framework", ["rsl_rl", "skrl", "rl_games", "sb3"])
def test_training_runs_the_frameworks_train_script_and_keeps_the_logs_as_checkpoint(framework):
    command = build_command(
        spec("amljob-train.yaml", isaacLab={"task": "Isaac-Ant-v0", "framework": framework, "maxIterations": 10})
    )
    assert f"./isaaclab.sh -p scripts/reinforcement_learning/{framework}/train.py --task Isaac-Ant-v0" in command
    assert "--max_iterations 10" in command
    assert "--headless" in command
    assert command.endswith(f"cp -r logs/{framework}/. ${{{{outputs.checkpoint}}}}/")


def test_hostile_task_names_cannot_break_out_of_the_command():
    command = build_command(spec("amljob-train.yaml", isaacLab={"task": "T", "extraArgs": ["--x; rm -rf /"]}))
    assert "'--x; rm -rf /'" in command


def _embedded(command: str, target: str) -> str:
    match = re.search(rf"echo (\S+) \| base64 -d > {re.escape(target)}", command)
    assert match, command
    return base64.b64decode(match.group(1)).decode()


def test_validation_embeds_the_evaluator_and_reads_the_model_input():
    command = build_command(spec("amljob-validate.yaml"))
    assert "class EpisodeTally" in _embedded(command, "/tmp/amlwire_evaluate.py")
    assert "--checkpoint ${{inputs.model}} --episodes 100" in command


def test_every_python_step_runs_in_isaac_sims_python_never_a_bare_python3():
    for delivery in ("Download", "InContainer"):
        command = build_command(spec("amljob-validate.yaml", model={"name": "m", "version": "2", "delivery": delivery}))
        steps = command.split(" && ")
        assert not any(re.match(r"^(python3?|pip3?) ", step) for step in steps), steps
        assert "./isaaclab.sh -p /tmp/amlwire_evaluate.py" in command


def test_validation_installs_mlflow_into_isaac_sims_python_unless_the_image_has_it():
    command = build_command(spec("amljob-validate.yaml"))
    install = "cd /workspace/isaaclab && ./isaaclab.sh -p -m pip install --quiet mlflow==2.15.1 azureml-mlflow==1.57.0"
    assert install in command
    assert command.index(install) < command.index("./isaaclab.sh -p /tmp/amlwire_evaluate.py")
    lab = {**example("amljob-validate.yaml")["isaacLab"], "imageHasMlflow": True}
    assert "pip install" not in build_command(spec("amljob-validate.yaml", isaacLab=lab))


def test_metrics_go_to_the_jobs_own_outputs_before_the_command_leaves_for_isaaclab():
    command = build_command(spec("amljob-validate.yaml"))
    assert command.startswith('export AMLWIRE_OUTPUTS="$PWD/outputs" && mkdir -p "$AMLWIRE_OUTPUTS"')
    assert command.index("AMLWIRE_OUTPUTS") < command.index("cd /workspace/isaaclab")
    assert "AMLWIRE_OUTPUTS" in _embedded(command, "/tmp/amlwire_evaluate.py")


def test_a_success_term_reaches_the_evaluator():
    lab = {**example("amljob-validate.yaml")["isaacLab"], "successTerm": "goal_reached"}
    assert "--success_term goal_reached" in build_command(spec("amljob-validate.yaml", isaacLab=lab))


def test_in_container_delivery_fetches_the_model_first_with_the_documented_credential():
    command = build_command(
        spec("amljob-validate.yaml", model={"name": "m", "version": "2", "delivery": "InContainer"})
    )
    assert command.index("amlwire_fetch_model.py") < command.index("amlwire_evaluate.py")
    assert "cd /workspace/isaaclab && ./isaaclab.sh -p /tmp/amlwire_fetch_model.py" in command
    fetcher = _embedded(command, "/tmp/amlwire_fetch_model.py")
    assert "ManagedIdentityCredential()" in fetcher
    assert "WorkloadIdentityCredential()" in fetcher
    assert "--checkpoint /tmp/amlwire-model" in command
    assert "${{inputs.model}}" not in command


@pytest.mark.parametrize("template", ["amljob-train.yaml", "amljob-validate.yaml"])
def test_isaaclab_jobs_accept_the_eula_run_as_the_compute_identity_and_time_out(template):
    request = build_request(spec(template), "robotics", "j", UID, "k8s-gpu", "robotics-gpu", WS)
    assert request.environment["ACCEPT_EULA"] == "Y"
    assert request.environment["PRIVACY_CONSENT"] == "Y"
    assert request.identity == "managed"
    assert request.timeout_seconds == (86400 if "train" in template else 7200)
    overridden = build_request(
        spec(template, environmentVariables={"PRIVACY_CONSENT": "N"}, timeoutSeconds=600),
        "robotics",
        "j",
        UID,
        "k8s-gpu",
        "robotics-gpu",
        WS,
    )
    assert (overridden.environment["PRIVACY_CONSENT"], overridden.timeout_seconds) == ("N", 600)


def test_isaaclab_templates_need_an_instance_type():
    with pytest.raises(ValueError, match=r"spec\.instanceType is required for the IsaacLab templates"):
        spec("amljob-train.yaml", instanceType=None)
    assert spec("amljob-command.yaml", instanceType=None).instance_type is None


@pytest.mark.parametrize(("delivery", "mode"), [("Mount", "ro_mount"), ("Download", "download")])
def test_sidecar_deliveries_become_aml_input_modes(delivery, mode):
    request = validate_request(delivery)
    assert request.model is not None
    assert (request.model.uri, request.model.mode, request.model.type) == ("azureml:m:2", mode, "custom_model")
    assert "AMLWIRE_MODEL" not in request.environment


def test_in_container_request_carries_the_model_and_workspace_in_the_environment():
    request = validate_request("InContainer")
    assert request.model is None
    assert request.environment["AMLWIRE_MODEL"] == "azureml:m:2"
    assert request.environment["AMLWIRE_WORKSPACE"] == WS
    assert "AZURE_CLIENT_ID" not in request.environment  # ManagedIdentityCredential() takes no client id


def test_request_tags_and_defaults():
    request = build_request(spec("amljob-command.yaml"), "robotics", "gpu-smoke", UID, "k8s-gpu", "robotics-gpu", WS)
    assert request.tags == {
        "amlwire.io/attached-compute": "robotics-gpu",
        "amlwire.io/namespace": "robotics",
        "amlwire.io/name": "gpu-smoke",
        "amlwire.io/uid": UID,
        "amlwire.io/template": "Command",
    }
    assert request.experiment == "robotics"
    assert request.literal_inputs == {"steps": 10}
    assert request.checkpoint_output is None


VERDICTS = [
    (None, {"success_rate": 0.1}, None),
    (GateSpec(min=0.9), {"success_rate": 0.94}, "Passed"),
    (GateSpec(min=0.9), {"success_rate": 0.89}, "Failed"),
    (GateSpec(min=0.9), {}, "Failed"),
    (GateSpec(metric="loss", max=0.2), {"loss": 0.2}, "Passed"),
    (GateSpec(metric="loss", min=0.1, max=0.2), {"loss": 0.05}, "Failed"),
]


@pytest.mark.parametrize(("gate", "metrics", "expected"), VERDICTS)
def test_verdict(gate, metrics, expected):
    assert verdict(gate, metrics) == expected


@pytest.mark.parametrize("shape", STREAM_ACCESS_SHAPES)
def test_every_shape_of_a_storage_access_failure_gives_the_same_code_and_hint(shape):
    error = stream_access_error("AuthorizationPermissionMismatch: no role", shape)
    assert failure_code(error) == STREAM_AUTH
    found = failure(failure_code(error), error["message"], BROKEN, "Mount")
    flat = stream_access_error("AuthorizationPermissionMismatch: no role", "flat")
    assert found.hint == failure(failure_code(flat), flat["message"], BROKEN, "Mount").hint
    assert found.hint is not None
    assert "AccessReady is False (RoleAssignmentMissing" in found.hint


def test_failure_codes():
    assert failure_code({"code": "UserError", "innerError": {"code": STREAM_AUTH}}) == STREAM_AUTH
    assert failure_code({"code": "SystemError"}) == "SystemError"
    assert failure_code({"code": "UserError", "innerError": {"code": "Execution", "innerError": {"code": "OOM"}}}) == (
        "Execution.OOM"
    )


BROKEN = ComputeHealth(
    "robotics-gpu",
    {"AccessReady": ("False", "RoleAssignmentMissing", "assign it"), "FederationReady": ("True", "Ok", "")},
)
HEALTHY = ComputeHealth(
    "robotics-gpu",
    dict.fromkeys(WIRING_CONDITIONS, ("True", "Ok", "")),
)


@pytest.mark.parametrize(
    ("message", "compute", "delivery", "expected"),
    [
        (f"{STREAM_AUTH}: permission denied", BROKEN, "Mount", "AccessReady is False (RoleAssignmentMissing"),
        (f"{STREAM_AUTH}: permission denied", BROKEN, "Mount", "spec.model.delivery: InContainer"),
        (f"{STREAM_AUTH}: permission denied", HEALTHY, "Download", "reports every link Ready"),
        (
            "AADSTS70021: No matching federated identity record",
            BROKEN,
            "InContainer",
            "no federated credential matched",
        ),
    ],
)
def test_hints_name_the_broken_link_and_the_way_around(message, compute, delivery, expected):
    assert expected in (hint("UserError", message, compute, delivery) or "")


def test_no_hint_for_unrelated_failures_and_no_in_container_advice_when_already_in_container():
    assert hint("UserError", "CUDA out of memory", BROKEN, "Mount") is None
    assert "InContainer" not in (hint("UserError", f"{STREAM_AUTH}: x", BROKEN, "InContainer") or "")


SUMMARIES = [
    ((None, None, None), {"Ready": "False", "Reconciling": "True", "Stalled": "False"}),
    (("Running", None, None), {"Ready": "False", "Reconciling": "True", "Stalled": "False"}),
    (("Completed", "Passed", None), {"Ready": "True", "Reconciling": "False", "Stalled": "False"}),
    (("Completed", None, None), {"Ready": "True", "Reconciling": "False", "Stalled": "False"}),
    (("Completed", "Failed", None), {"Ready": "False", "Reconciling": "False", "Stalled": "True"}),
    (
        ("Failed", None, FailureStatus(code=STREAM_AUTH, message="m", hint="h")),
        {"Ready": "False", "Reconciling": "False", "Stalled": "True"},
    ),
    (("Canceled", None, None), {"Ready": "False", "Reconciling": "False", "Stalled": "True"}),
]


@pytest.mark.parametrize(("args", "expected"), SUMMARIES)
def test_job_summary(args, expected):
    assert {s.type: s.status for s in job_summary(*args)} == expected


def test_failed_job_reason_keeps_the_aml_code_readable():
    stalled = job_summary("Failed", None, FailureStatus(code=STREAM_AUTH, message="m", hint="the hint"))[2]
    assert stalled.reason == "ScriptExecutionStreamAccessAuthentication"
    assert stalled.message == "the hint"


def test_other_failures_are_job_failed_with_the_code_in_status():
    stalled = job_summary("Failed", None, FailureStatus(code="UserError", message="exit code 1"))[2]
    assert (stalled.reason, stalled.message) == ("JobFailed", "exit code 1")


def test_fetch_model_argument_parsing():
    assert parse_model("azureml:isaaclab-anymal-latest:2") == ("isaaclab-anymal-latest", "2")
    assert parse_workspace(WS) == ("s", "rg", "w")
    with pytest.raises(SystemExit, match="azureml:NAME:VERSION"):
        parse_model("isaaclab:2")


def test_the_fetcher_uses_workload_identity_when_the_pod_has_it_else_the_documented_managed_identity(
    monkeypatch, tmp_path
):
    from amlwire.templates.fetch_model import credential

    for name in ("AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)
    assert type(credential()).__name__ == "ManagedIdentityCredential"
    token = tmp_path / "token"
    token.write_text("x")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token))
    monkeypatch.setenv("AZURE_CLIENT_ID", "c")
    monkeypatch.setenv("AZURE_TENANT_ID", "t")
    assert type(credential()).__name__ == "WorkloadIdentityCredential"
