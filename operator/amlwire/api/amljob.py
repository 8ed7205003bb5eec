"""AmlJob: one AML command job (IsaacLab training, validation, or a free command) on an AttachedCompute."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, WithJsonSchema, model_validator

from amlwire.api.common import CRDModel, CRDRoot, Matches, ObjectStatus, cel, rule
from amlwire.api.templates import TEMPLATE_RULES, Framework, Template, broken_rule

ModelType = Literal["custom_model", "mlflow_model"]
ModelDelivery = Literal["Mount", "Download", "InContainer"]
Verdict = Literal["Passed", "Failed"]
IsaacLabVersion = Literal["2", "3"]
ResumeMode = Literal["Never", "FromLastCheckpoint"]

IDENTIFIER_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"


def immutable_rule(field: str) -> dict[str, str]:
    return rule(
        "self == oldSelf",
        f"spec.{field} is immutable: an AML job cannot change after submission; delete and recreate "
        "the AmlJob to run it differently",
    )


def immutable(field: str) -> Callable[[dict[str, Any]], None]:
    return cel(immutable_rule(field))


InputValue = Annotated[
    int | Annotated[str, StringConstraints(max_length=4096)],
    WithJsonSchema({"x-kubernetes-int-or-string": True, "maxLength": 4096}),
]


class IsaacLabSpec(CRDModel):
    """How the IsaacLab templates build the job's command."""

    task: Annotated[
        str,
        Matches(
            r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
            "spec.isaacLab.task must be an IsaacLab task ID such as Isaac-Velocity-Rough-Anymal-C-v0",
        ),
    ] = Field(min_length=1, max_length=200, description="IsaacLab task ID, e.g. Isaac-Velocity-Rough-Anymal-C-v0.")
    framework: Framework = Field(
        default="rsl_rl", description="RL framework whose IsaacLab scripts are used: rsl_rl, skrl, rl_games or sb3."
    )
    num_envs: int | None = Field(default=None, ge=1, le=65536, description="Parallel environments (--num_envs).")
    max_iterations: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Training iterations (--max_iterations), IsaacLabTrain only."
    )
    episodes: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Evaluation episodes, IsaacLabValidate only (default 100)."
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="Random seed (--seed).")
    headless: bool = Field(default=True, description="Run the simulator without a display (--headless).")
    success_term: Annotated[
        str | None,
        Matches(IDENTIFIER_RE, "spec.isaacLab.successTerm must be the name of a termination term, e.g. goal_reached"),
    ] = Field(
        default=None,
        max_length=128,
        description="IsaacLabValidate: a termination term that means success (manipulation tasks). Default: an "
        "episode succeeds when it lasts to its time-out (locomotion).",
    )
    image_has_mlflow: bool = Field(
        default=False,
        description="IsaacLabValidate: the image already has mlflow (or mlflow-skinny) and azureml-mlflow in Isaac "
        "Sim's python. The stock IsaacLab image has neither, so by default the job pip-installs pinned "
        "mlflow-skinny and azureml-mlflow first.",
    )
    image_has_azure_sdk: bool = Field(
        default=False,
        description="IsaacLabValidate with spec.model.delivery InContainer: the image already has azure-ai-ml and "
        "azure-identity in Isaac Sim's python; by default the job pip-installs pinned versions first.",
    )
    version: IsaacLabVersion = Field(
        default="2",
        description='The IsaacLab generation the image runs: "2" (IsaacLab 2.x, the nvcr.io isaac-lab 2.x images: '
        './isaaclab.sh -p scripts/reinforcement_learning/<framework>/train.py, --headless) or "3" (IsaacLab 3.0: '
        "the unified `isaaclab train --rl_library <framework>` command, --viz none instead of --headless).",
    )
    play_variant: bool = Field(
        default=True,
        description="IsaacLabValidate: evaluate on the task's -Play variant where IsaacLab registers one (the same "
        "task without curriculum, pushes and observation noise), as IsaacLab's play.py is meant to be used.",
    )
    extra_args: list[Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=list, max_length=64, description="Extra arguments appended to the IsaacLab script."
    )


class ModelSpec(CRDModel):
    """A registered AML model the job consumes (the checkpoint to validate)."""

    name: Annotated[
        str,
        Matches(
            r"^[a-zA-Z0-9][-a-zA-Z0-9_.]*$",
            "spec.model.name must be an AML model name: letters, digits, '-', '_' or '.'",
        ),
    ] = Field(min_length=1, max_length=255, description="Name of the registered model.")
    version: Annotated[
        str,
        Matches(r"^[a-zA-Z0-9][-a-zA-Z0-9_.]*$", 'spec.model.version must be a model version such as "2"'),
    ] = Field(min_length=1, max_length=64, description="Version of the registered model, as a string.")
    type: ModelType = Field(
        default="custom_model",
        description="custom_model for a plain checkpoint (e.g. a .pt file); mlflow_model only for models saved "
        "in MLflow format.",
    )
    delivery: ModelDelivery = Field(
        default="Download",
        description="Mount or Download: AML's data-capability sidecar brings the model in (needs the storage "
        "wiring). InContainer: the job downloads it with the SDK: the pod's workload identity when the pod has "
        "it, else ManagedIdentityCredential() (the compute's identity, as AML documents); either identity needs "
        "a workspace role (e.g. AzureML Data Scientist) besides the storage role.",
    )


class GateSpec(CRDModel):
    """The verdict rule: a metric the job logs must reach a threshold."""

    metric: Annotated[
        str, Matches(r"^[A-Za-z0-9_./-]+$", "spec.gate.metric must be a metric name such as success_rate")
    ] = Field(
        default="success_rate", min_length=1, max_length=250, description="Metric the job logs, e.g. success_rate."
    )
    min: float | None = Field(default=None, description="Verdict Passed when the metric is at least this.")
    max: float | None = Field(default=None, description="Verdict Passed when the metric is at most this.")


class ResumeSpec(CRDModel):
    """What to do when a training attempt ends early (failed, canceled at its timeout, or preempted)."""

    mode: ResumeMode = Field(
        default="FromLastCheckpoint",
        description="FromLastCheckpoint: submit the next attempt with the last attempt's checkpoint output as input, "
        "continuing with --resume --load_run RUN --checkpoint FILE (rsl_rl). Never: one attempt only.",
    )
    max_attempts: int = Field(
        default=3, ge=1, le=20, description="Attempts in all, the first included; each is one AML job."
    )


class RegisterSpec(CRDModel):
    """Register the job's checkpoint output as a model version when the job succeeds."""

    model_name: Annotated[
        str,
        Matches(r"^[a-zA-Z0-9][-a-zA-Z0-9_.]*$", "spec.register.modelName must be an AML model name"),
    ] = Field(min_length=1, max_length=255, description="Model name to register the checkpoint under.")
    type: ModelType = Field(default="custom_model", description="Model type of the registered checkpoint.")


UNDECLARED_INPUT = (
    "spec.command uses ${{inputs.NAME}} for an input spec.inputs does not declare, and AML refuses such a job: "
    "declare it in spec.inputs (spec.model is ${{inputs.model}}), or remove it from spec.command"
)
UNDECLARED_OUTPUT = (
    "spec.command uses ${{outputs.NAME}} for an output the job does not have: the only output is "
    "${{outputs.checkpoint}}, which spec.register declares"
)
# ${{inputs.NAME}} / ${{outputs.NAME}} in a command; the same regex in CEL (RE2) and in Python
BINDING = r"[$][{][{] *(inputs|outputs)[.]([A-Za-z0-9_]+) *[}][}]"
_BOUND_NAME = "m.split('.')[1].split('}')[0].trim()"


class AmlJobSpec(CRDModel):
    """Desired AML command job."""

    model_config = CRDModel.model_config | {
        "json_schema_extra": cel(
            *(template_rule.schema() for template_rule in TEMPLATE_RULES),
            rule(
                "!has(self.command) || self.command.findAll('[$][{][{] *inputs[.][A-Za-z0-9_]+ *[}][}]')"
                f".all(m, {_BOUND_NAME} in self.inputs || (has(self.model) && {_BOUND_NAME} == 'model'))",
                UNDECLARED_INPUT,
                fieldPath=".command",
            ),
            rule(
                "!has(self.command) || self.command.findAll('[$][{][{] *outputs[.][A-Za-z0-9_]+ *[}][}]')"
                f".all(m, has(self.register) && {_BOUND_NAME} == 'checkpoint')",
                UNDECLARED_OUTPUT,
                fieldPath=".command",
            ),
            rule(
                "!has(self.gate) || has(self.gate.min) || has(self.gate.max)",
                "spec.gate needs min or max: the threshold the metric must reach",
                fieldPath=".gate",
            ),
            rule(
                "has(oldSelf.model) == has(self.model) && has(oldSelf.command) == has(self.command) "
                "&& has(oldSelf.isaacLab) == has(self.isaacLab)",
                "spec.model, spec.command and spec.isaacLab cannot be added or removed after creation; "
                "delete and recreate the AmlJob",
            ),
        )
    }

    compute_ref: Annotated[
        str,
        Matches(
            r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
            "spec.computeRef must be the name of an AttachedCompute (kubectl get amlc)",
        ),
    ] = Field(
        min_length=1,
        max_length=253,
        description="Name of the AttachedCompute to run on. Immutable.",
        json_schema_extra=immutable("computeRef"),
    )
    instance_type: str | None = Field(
        default=None,
        max_length=63,
        description="Instance type of the compute (spec.compute.instanceTypes[].name on the AttachedCompute).",
        json_schema_extra=immutable("instanceType"),
    )
    experiment: Annotated[
        str | None,
        Matches(r"^[a-zA-Z0-9][-a-zA-Z0-9_.]*$", "spec.experiment must be letters, digits, '-', '_' or '.'"),
    ] = Field(default=None, max_length=255, description="AML experiment name. Defaults to the namespace.")
    display_name: str | None = Field(default=None, max_length=255, description="Display name in AML studio.")
    image: Annotated[
        str,
        Matches(
            r"^[a-zA-Z0-9][-a-zA-Z0-9_./:@]*$",
            "spec.image must be a container image reference such as nvcr.io/nvidia/isaac-lab:2.1.0",
        ),
    ] = Field(
        min_length=1,
        max_length=512,
        description="Container image the job runs in, e.g. nvcr.io/nvidia/isaac-lab:2.1.0.",
        json_schema_extra=immutable("image"),
    )
    template: Template = Field(
        description="How the command is built: IsaacLabTrain, IsaacLabValidate, or Command (spec.command).",
        json_schema_extra=immutable("template"),
    )
    isaac_lab: IsaacLabSpec | None = Field(
        default=None,
        alias="isaacLab",
        description="IsaacLab task and arguments, for the IsaacLab templates.",
        json_schema_extra=immutable("isaacLab"),
    )
    command: str | None = Field(
        default=None,
        max_length=16384,
        description="The command to run, for template Command. Inputs are available as ${{inputs.NAME}}.",
        json_schema_extra=immutable("command"),
    )
    model: ModelSpec | None = Field(
        default=None,
        description="Registered model the job consumes (required for IsaacLabValidate).",
        json_schema_extra=immutable("model"),
    )
    gate: GateSpec | None = Field(default=None, description="Verdict rule over a metric the job logs.")
    registration: RegisterSpec | None = Field(
        default=None,
        alias="register",
        description="Register the checkpoint output as a model version when the job succeeds.",
    )
    inputs: dict[str, InputValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Literal inputs, available to the command as ${{inputs.NAME}}: integers or non-empty "
        'strings (quote decimals and booleans: lr: "3e-4"). Plain values only; typed inputs such as '
        "{type: string, default: x} are for pipeline jobs, not command jobs.",
        json_schema_extra=cel(
            rule(
                "self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$'))",
                "spec.inputs keys must be identifiers (letters, digits, '_', not starting with a digit)",
            ),
            rule(
                "self.all(k, type(self[k]) == string ? self[k] != '' : true)",
                'spec.inputs values must not be empty strings (AML rejects them: "Empty string is not allowed '
                'for input value"); omit the input or use a sentinel value',
            ),
            immutable_rule("inputs"),
        ),
    )
    environment_variables: dict[str, Annotated[str, StringConstraints(max_length=32768)]] = Field(
        default_factory=dict,
        max_length=128,
        description="Environment variables of the job's container.",
        json_schema_extra=cel(
            rule(
                "self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$'))",
                "spec.environmentVariables keys must be valid variable names ([A-Za-z_][A-Za-z0-9_]*)",
            ),
        ),
    )
    resume: ResumeSpec | None = Field(
        default=None,
        description="IsaacLabTrain (rsl_rl): when an attempt fails, is canceled at its timeout or preempted, submit "
        "the next from its last checkpoint (checkpoints reach the output while training runs), up to "
        "maxAttempts. status.attempts shows the chain.",
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=60,
        le=30 * 24 * 3600,
        description="Cancel the AML job after this many seconds. IsaacLab templates default to 24 hours "
        "(IsaacLabTrain) and 2 hours (IsaacLabValidate): Isaac Sim can hang instead of exiting.",
    )

    @model_validator(mode="after")
    def _template_needs(self) -> AmlJobSpec:
        """The rules admission enforces, enforced again where admission was skipped (an older CRD): the templates'
        (generated from the same registry as the CEL) and the command's bindings."""
        broken = broken_rule(self)
        if broken is not None:
            raise ValueError(broken.message)
        for kind, name in re.findall(BINDING, self.command or ""):
            if kind == "inputs" and name not in self.inputs and not (name == "model" and self.model):
                raise ValueError(UNDECLARED_INPUT)
            if kind == "outputs" and not (name == "checkpoint" and self.registration):
                raise ValueError(UNDECLARED_OUTPUT)
        return self


class FailureStatus(CRDModel):
    """Why the AML job failed, and what to do about it."""

    code: str = Field(description="AML error code, e.g. ScriptExecution.StreamAccess.Authentication.")
    message: str = Field(description="AML error message.")
    hint: str | None = Field(default=None, description="What amlwire thinks is wrong in the wiring, and the fix.")


class RegisteredModelStatus(CRDModel):
    """The model version registered from the job's output."""

    name: str = Field(description="Model name.")
    version: str = Field(description="Model version.")


class AttemptStatus(CRDModel):
    """An earlier attempt of a resumed training job."""

    aml_job_name: str = Field(description="Name of the attempt's AML job.")
    aml_status: str = Field(description="How it ended: Failed or Canceled.")
    end_time: str | None = Field(default=None, description="When it ended (RFC 3339).")
    failure: str | None = Field(default=None, description="Its failure code and message, when it failed.")


class AmlJobStatus(ObjectStatus):
    """Observed state of the AML job."""

    aml_job_name: str | None = Field(default=None, description="Name of the job in the AML workspace.")
    workspace: str | None = Field(default=None, description="ARM ID of the AML workspace the job runs in.")
    studio_url: str | None = Field(default=None, description="Link to the job in AML studio.")
    aml_status: str | None = Field(
        default=None, description="AML job status: NotStarted, Queued, Running, Completed, Failed, Canceled, ..."
    )
    start_time: str | None = Field(default=None, description="When the AML job started running (RFC 3339).")
    end_time: str | None = Field(default=None, description="When the AML job ended (RFC 3339).")
    metrics: dict[str, float] = Field(default_factory=dict, description="Final metrics the job logged.")
    verdict: Verdict | None = Field(default=None, description="Passed or Failed against spec.gate.")
    failure: FailureStatus | None = Field(default=None, description="Why the job failed.")
    registered_model: RegisteredModelStatus | None = Field(
        default=None, description="Model version registered from the output (spec.register)."
    )
    evidence: dict[str, str] = Field(
        default_factory=dict,
        description="What amlwire's evaluator measured on: task, checkpoint and its checkpoint_sha256, seed, "
        "num_envs, episodes_per_env. A validation's verdict needs it.",
    )
    attempts: list[AttemptStatus] = Field(
        default_factory=list,
        description="Earlier attempts of a training job resumed from its last checkpoint (spec.resume), oldest first; "
        "amlJobName is the current attempt's.",
    )


class AmlJob(CRDRoot):
    """An Azure Machine Learning command job (IsaacLab training or validation) on an AttachedCompute."""

    kind: Literal["AmlJob"] = "AmlJob"
    spec: AmlJobSpec
    status: AmlJobStatus = Field(default_factory=AmlJobStatus)
