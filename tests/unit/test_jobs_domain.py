"""Table tests of the AmlJob domain: names, generated commands, requests, verdicts, hints, summaries."""

from __future__ import annotations

import base64
import gzip
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
    failure_reason,
    hint,
    job_summary,
    verdict,
)
from amlwire.domain.view import WIRING_CONDITIONS, ComputeHealth, ComputeView, view_of
from amlwire.templates.fetch_model import parse_model, parse_workspace
from amlwire.templates.jobkit import StepFailed
from amlwire_sandbox.jobs import stream_access_error
from amlwire_sandbox.world import STREAM_ACCESS_SHAPES
from tests.conftest import example

UID = "3f2a9c1e-1111-2222-3333-444455556666"
WS = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"


def spec(name: str, **changes) -> AmlJobSpec:
    return AmlJobSpec.model_validate(example(name, **changes))


def compute(**spec_changes) -> ComputeView:
    """The example AttachedCompute as the operator's index holds it (workspace WS)."""
    raw = example("attachedcompute.yaml", **spec_changes)
    raw["workspace"] = {"subscriptionId": "s", "resourceGroup": "rg", "name": "w"}
    return view_of("robotics-gpu", raw, {})


def request(job: AmlJobSpec, name: str = "j", attempts: tuple[str, ...] = (), **compute_changes) -> JobRequest:
    return build_request(job, "robotics", name, UID, compute(**compute_changes), attempts)


def validate_request(delivery: str) -> JobRequest:
    """The request of the validation example with model m:2 delivered as `delivery`."""
    return request(spec("amljob-validate.yaml", model={"name": "m", "version": "2", "delivery": delivery}), "v")


@pytest.mark.parametrize("name", ["anymal-train-7", "a.b.c", "x" * 253])
def test_aml_job_names_are_valid_and_derived_from_the_uid(name):
    job = aml_job_name(name, UID)
    assert re.fullmatch(r"[a-zA-Z0-9][\w-]{0,254}", job)
    assert job.endswith("-3f2a9c1e1111")
    assert job == aml_job_name(name, UID)
    assert job != aml_job_name(name, UID.replace("3f", "4f"))
    assert aml_job_name(name, UID, 2) == job + "-a2"
    assert re.fullmatch(r"[a-zA-Z0-9][\w-]{0,254}", aml_job_name(name, UID, 20))


@pytest.mark.parametrize("framework", ["rsl_rl", "skrl", "rl_games", "sb3"])
def test_training_writes_its_checkpoints_straight_into_the_output(framework):
    command = build_command(
        spec(
            "amljob-train.yaml",
            isaacLab={"task": "Isaac-Ant-v0", "framework": framework, "maxIterations": 10},
            resume=None,  # rsl_rl only
        )
    )
    steps = command.split(" && ")
    output = "${{outputs.checkpoint}}"
    assert steps[:4] == [
        "cd /workspace/isaaclab",
        f"mkdir -p {output} logs",
        f"rm -rf logs/{framework}",
        f"ln -s {output} logs/{framework}",
    ]
    assert steps[-1] == (
        f"./isaaclab.sh -p scripts/reinforcement_learning/{framework}/train.py --task Isaac-Ant-v0 --headless "
        "--max_iterations 10"
    )
    assert "cp -r logs" not in command  # nothing is copied at the end: a hang or a timeout keeps every save


def test_training_on_several_gpus_runs_one_process_per_gpu():
    command = build_command(spec("amljob-train.yaml"), gpus=4)
    assert (
        "./isaaclab.sh -p -m torch.distributed.run --nnodes=1 --nproc_per_node=4 "
        "scripts/reinforcement_learning/rsl_rl/train.py --task Isaac-Velocity-Rough-Anymal-C-v0"
    ) in command
    assert command.endswith("--distributed")
    assert "torch.distributed" not in build_command(spec("amljob-train.yaml"), gpus=1)


def test_a_resumed_attempt_copies_the_last_attempts_checkpoints_and_resumes_from_the_newest():
    command = build_command(spec("amljob-train.yaml"), resumed=True)
    steps = command.split(" && ")
    copy = "cp -r ${{inputs.resume_from}}/. ${{outputs.checkpoint}}/"
    resume = "cd /workspace/isaaclab && ./isaaclab.sh -p /tmp/amlwire/resume.py '${{outputs.checkpoint}}' "
    assert copy in steps
    assert resume + "/tmp/amlwire/resume-args" in command
    assert steps.index(copy) < steps.index(next(s for s in steps if s.startswith("./isaaclab.sh -p /tmp/amlwire")))
    assert steps[-1].endswith("--max_iterations 1500 $(cat /tmp/amlwire/resume-args)")
    assert "def last_checkpoint" in _embedded(command, "/tmp/amlwire/resume.py")
    assert "class Watchdog" in _embedded(command, "/tmp/amlwire/jobkit.py")


def test_isaaclab_3_uses_its_unified_command_and_viz_none():
    lab = {**example("amljob-train.yaml")["isaacLab"], "version": "3"}
    command = build_command(spec("amljob-train.yaml", isaacLab=lab))
    assert "isaaclab train --rl_library rsl_rl --task Isaac-Velocity-Rough-Anymal-C-v0" in command
    assert "--viz none" in command
    assert "--headless" not in command
    validate = {**example("amljob-validate.yaml")["isaacLab"], "version": "3"}
    assert "--viz none" in build_command(spec("amljob-validate.yaml", isaacLab=validate))


@pytest.mark.parametrize(
    ("task", "cameras"),
    [("Isaac-Cartpole-RGB-Camera-Direct-v0", True), ("Isaac-Cartpole-Depth-v0", True), ("Isaac-Ant-v0", False)],
)
def test_camera_tasks_get_enable_cameras(task, cameras):
    lab = {**example("amljob-train.yaml")["isaacLab"], "task": task}
    assert ("--enable_cameras" in build_command(spec("amljob-train.yaml", isaacLab=lab))) is cameras
    asked = {**lab, "extraArgs": ["--enable_cameras"]}
    assert build_command(spec("amljob-train.yaml", isaacLab=asked)).count("--enable_cameras") == 1


def test_hostile_task_names_cannot_break_out_of_the_command():
    command = build_command(spec("amljob-train.yaml", isaacLab={"task": "T", "extraArgs": ["--x; rm -rf /"]}))
    assert "'--x; rm -rf /'" in command


def _embedded(command: str, target: str) -> str:
    match = re.search(rf"echo (\S+) \| base64 -d \| gunzip > {re.escape(target)}", command)
    assert match, command
    return gzip.decompress(base64.b64decode(match.group(1))).decode()


def test_validation_embeds_the_evaluator_and_reads_the_model_input():
    command = build_command(spec("amljob-validate.yaml"))
    assert "class EpisodeTally" in _embedded(command, "/tmp/amlwire/isaaclab_evaluate.py")
    assert "def run_step" in _embedded(command, "/tmp/amlwire/jobkit.py")
    assert command.endswith("--episodes 100 --checkpoint ${{inputs.model}}")


def test_a_task_or_argument_naming_checkpoint_is_left_alone():
    lab = {**example("amljob-validate.yaml")["isaacLab"], "task": "CHECKPOINT-Task", "extraArgs": ["env.CHECKPOINT=1"]}
    command = build_command(spec("amljob-validate.yaml", isaacLab=lab))
    assert "--task CHECKPOINT-Task" in command
    assert "env.CHECKPOINT=1 --checkpoint ${{inputs.model}}" in command


def test_every_python_step_runs_in_isaac_sims_python_never_a_bare_python3():
    for delivery in ("Download", "InContainer"):
        command = build_command(spec("amljob-validate.yaml", model={"name": "m", "version": "2", "delivery": delivery}))
        steps = command.split(" && ")
        assert not any(re.match(r"^(python3?|pip3?) ", step) for step in steps), steps
        assert "./isaaclab.sh -p /tmp/amlwire/isaaclab_evaluate.py" in command


def test_validation_installs_pinned_light_packages_into_isaac_sims_python_unless_the_image_has_them():
    command = build_command(spec("amljob-validate.yaml"))
    install = (
        "cd /workspace/isaaclab && ./isaaclab.sh -p -m pip install --quiet mlflow-skinny==2.15.1 azureml-mlflow==1.57.0"
    )
    assert install in command
    assert command.index(install) < command.index("./isaaclab.sh -p /tmp/amlwire/isaaclab_evaluate.py")
    assert " mlflow==" not in command  # full mlflow brings pyarrow, pandas, Flask, sqlalchemy...
    lab = {**example("amljob-validate.yaml")["isaacLab"], "imageHasMlflow": True}
    assert "pip install" not in build_command(spec("amljob-validate.yaml", isaacLab=lab))


def test_metrics_go_to_the_jobs_own_outputs_before_the_command_leaves_for_isaaclab():
    command = build_command(spec("amljob-validate.yaml"))
    assert command.startswith('export AMLWIRE_OUTPUTS="$PWD/outputs" && mkdir -p "$AMLWIRE_OUTPUTS"')
    assert command.index("AMLWIRE_OUTPUTS") < command.index("cd /workspace/isaaclab")
    assert "AMLWIRE_OUTPUTS" in _embedded(command, "/tmp/amlwire/isaaclab_evaluate.py")


def test_a_success_term_and_no_play_variant_reach_the_evaluator():
    lab = {**example("amljob-validate.yaml")["isaacLab"], "successTerm": "goal_reached", "playVariant": False}
    command = build_command(spec("amljob-validate.yaml", isaacLab=lab))
    assert "--success_term goal_reached" in command
    assert "--no-play_variant" in command
    assert "--no-play_variant" not in build_command(spec("amljob-validate.yaml"))


def test_in_container_delivery_fetches_the_model_first_with_pinned_sdk_packages():
    command = build_command(
        spec("amljob-validate.yaml", model={"name": "m", "version": "2", "delivery": "InContainer"})
    )
    sdk = "./isaaclab.sh -p -m pip install --quiet azure-ai-ml==1.35.2 azure-identity==1.27.0"
    fetch = "cd /workspace/isaaclab && ./isaaclab.sh -p /tmp/amlwire/fetch_model.py"
    assert command.index(sdk) < command.index(fetch) < command.index("./isaaclab.sh -p /tmp/amlwire/isaaclab_evaluate")
    fetcher = _embedded(command, "/tmp/amlwire/fetch_model.py")
    assert "ManagedIdentityCredential()" in fetcher
    assert "WorkloadIdentityCredential()" in fetcher
    assert "pip" not in fetcher  # nothing unpinned installed at run time
    assert command.endswith("--checkpoint /tmp/amlwire-model")
    assert "${{inputs.model}}" not in command
    lab = {**example("amljob-validate.yaml")["isaacLab"], "imageHasAzureSdk": True}
    carried = spec("amljob-validate.yaml", isaacLab=lab, model={"name": "m", "version": "2", "delivery": "InContainer"})
    assert "azure-ai-ml" not in build_command(carried)


@pytest.mark.parametrize("template", ["amljob-train.yaml", "amljob-validate.yaml"])
def test_isaaclab_jobs_accept_the_eula_run_as_the_compute_identity_and_time_out(template):
    made = request(spec(template))
    assert made.environment["ACCEPT_EULA"] == "Y"
    assert made.environment["PRIVACY_CONSENT"] == "Y"
    assert made.identity == "managed"
    assert made.timeout_seconds == (86400 if "train" in template else 7200)
    overridden = request(spec(template, environmentVariables={"PRIVACY_CONSENT": "N"}, timeoutSeconds=600))
    assert (overridden.environment["PRIVACY_CONSENT"], overridden.timeout_seconds) == ("N", 600)


def test_a_resumed_attempt_is_another_aml_job_reading_the_last_attempts_output():
    first = request(spec("amljob-train.yaml", resume={}), "t")
    second = request(spec("amljob-train.yaml", resume={}), "t", attempts=(first.name,))
    assert (first.resume_from, second.resume_from) == (None, first.name)
    assert second.name == first.name + "-a2"
    assert second.tags["amlwire.io/attempt"] == "2"
    assert "amlwire.io/attempt" not in first.tags
    assert second.display_name.endswith("(attempt 2)")
    assert "resume.py" in second.command
    assert "resume.py" not in first.command
    assert first.checkpoint_mode == "rw_mount"


def test_isaaclab_templates_need_an_instance_type():
    with pytest.raises(ValueError, match=r"spec\.instanceType is required for the IsaacLab templates"):
        spec("amljob-train.yaml", instanceType=None)
    assert spec("amljob-command.yaml", instanceType=None).instance_type is None


@pytest.mark.parametrize(("delivery", "mode"), [("Mount", "ro_mount"), ("Download", "download")])
def test_sidecar_deliveries_become_aml_input_modes(delivery, mode):
    made = validate_request(delivery)
    assert made.model is not None
    assert (made.model.uri, made.model.mode, made.model.type) == ("azureml:m:2", mode, "custom_model")
    assert "AMLWIRE_MODEL" not in made.environment


def test_in_container_request_carries_the_model_and_workspace_in_the_environment():
    made = validate_request("InContainer")
    assert made.model is None
    assert made.environment["AMLWIRE_MODEL"] == "azureml:m:2"
    assert made.environment["AMLWIRE_WORKSPACE"] == WS
    assert "AZURE_CLIENT_ID" not in made.environment  # ManagedIdentityCredential() takes no client id


def test_request_tags_and_defaults():
    made = request(spec("amljob-command.yaml"), "gpu-smoke")
    assert made.tags == {
        "amlwire.io/attached-compute": "robotics-gpu",
        "amlwire.io/namespace": "robotics",
        "amlwire.io/name": "gpu-smoke",
        "amlwire.io/uid": UID,
        "amlwire.io/template": "Command",
    }
    assert made.experiment == "robotics"
    assert made.literal_inputs == {"steps": 10}
    assert made.checkpoint_output is None


VERDICTS = [
    (None, {"success_rate": 0.1}, None),
    (GateSpec(min=0.9), {"success_rate": 0.94}, "Passed"),
    (GateSpec(min=0.9), {"success_rate": 0.89}, "Failed"),
    (GateSpec(min=0.9), {}, None),  # no metric: no verdict (missing_evidence says why)
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
    with pytest.raises(StepFailed, match="azureml:NAME:VERSION"):
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


@pytest.mark.parametrize(
    ("federated", "says"),
    [
        (None, "its credential may still be propagating"),
        ((), "federates system:serviceaccount:azureml:default now, though AttachedCompute robotics-gpu lists it"),
        (("system:serviceaccount:azureml:default",), "exists on the identity but Entra did not honour it yet"),
    ],
)
def test_a_token_exchange_hint_follows_the_credentials_there_now(federated, says):
    health = ComputeHealth(
        "robotics-gpu",
        dict.fromkeys(WIRING_CONDITIONS, ("True", "Ok", "")),
        subjects=("system:serviceaccount:azureml:default",),
        federated=federated,
    )
    message = "AADSTS70021: No matching federated identity record found for presented assertion subject "
    message += "'system:serviceaccount:azureml:default'"
    assert says in (hint("UserError", message, health, "Mount") or "")


PULLS = [
    # (case, AML's message, reason, the hint says)
    (
        "a private registry refusing the compute's identity",
        'Failed to pull image "crrobotics.azurecr.io/isaac:2": failed to authorize: ... 401 Unauthorized',
        "ImagePullFailed",
        "needs AcrPull there",
    ),
    (
        "a registry that does not know the image",
        'Failed to pull image "crrobotics.azurecr.io/isaac:9": not found',
        "ImagePullFailed",
        "check that it exists there",
    ),
    ("a public registry", 'Failed to pull image "nvcr.io/nvidia/x:1": timeout', "ImagePullFailed", "nvcr.io"),
    ("something else", "Process exited with code 1", "JobFailed", None),
]


@pytest.mark.parametrize(("case", "message", "reason", "says"), PULLS, ids=[p[0] for p in PULLS])
def test_an_image_pull_failure_is_its_own_reason_and_names_the_role(case, message, reason, says):
    found = failure("UserError", message, ComputeHealth("robotics-gpu"), None)
    assert failure_reason(found) == reason
    if says is None:
        assert found.hint is None
    else:
        assert says in (found.hint or "")
