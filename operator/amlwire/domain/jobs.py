"""AmlJob: the AML command job a spec stands for, and how AML's answer becomes status (pure)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from amlwire.api import reasons as r
from amlwire.api.amljob import AmlJobSpec, FailureStatus, GateSpec, IsaacLabSpec
from amlwire.api.templates import BY_NAME as TEMPLATES
from amlwire.domain.conditions import StepResult, Summary, blocked, kstatus, progressing
from amlwire.domain.failures import BY_ID
from amlwire.domain.federation import subject_of
from amlwire.domain.view import ComputeHealth, ComputeView
from amlwire.templates import embedded

ISAACLAB_ROOT = "/workspace/isaaclab"
STEPS_DIR = "/tmp/amlwire"  # noqa: S108 - where amlwire writes its step scripts inside the job's container
EVALUATOR = f"{STEPS_DIR}/isaaclab_evaluate.py"
FETCHER = f"{STEPS_DIR}/fetch_model.py"
RESUMER = f"{STEPS_DIR}/resume.py"
RESUME_ARGS = f"{STEPS_DIR}/resume-args"
MODEL_DIR = "/tmp/amlwire-model"  # noqa: S108
# JobStatus values that never change again; NotResponding, Paused and Unknown are not among them (a
# NotResponding job can go back to any earlier state)
TERMINAL = frozenset({"Completed", "Failed", "Canceled"})
# Statuses a job passes through in seconds on its way somewhere that matters: not worth an apiserver write
# each (status shows them when a reconcile happens to see them; AML studio shows every step)
PASSING = frozenset({"Starting", "Preparing", "Provisioning", "Finalizing", "CancelRequested"})
STREAM_AUTH = "ScriptExecution.StreamAccess.Authentication"
TAG_COMPUTE = "amlwire.io/attached-compute"
TAG_NAMESPACE = "amlwire.io/namespace"
TAG_NAME = "amlwire.io/name"
TAG_UID = "amlwire.io/uid"
TAG_TEMPLATE = "amlwire.io/template"
TAG_ATTEMPT = "amlwire.io/attempt"
DEFAULT_EPISODES = 100
# Pinned packages the stock IsaacLab image lacks: azureml-mlflow needs only mlflow-skinny (not mlflow's pyarrow,
# pandas, Flask, ...); the in-container download needs the SDK. Versions as constraints.txt tests them.
LOGGING_PACKAGES = ("mlflow-skinny==2.15.1", "azureml-mlflow==1.57.0")
SDK_PACKAGES = ("azure-ai-ml==1.35.2", "azure-identity==1.27.0")
ISAAC_SIM_CONSENT = {"ACCEPT_EULA": "Y", "PRIVACY_CONSENT": "Y"}  # Isaac Sim refuses to start without them
OUTPUTS = "AMLWIRE_OUTPUTS"  # the job's ./outputs, absolute: AML uploads it from where the job started
CHECKPOINT_OUTPUT = "checkpoint"
RESUME_INPUT = "resume_from"
JOB_POD_ACCOUNT = "default"  # the service account AML's job pods run as in the compute's namespace
# Tasks that render: Isaac Sim needs --enable_cameras for them (IsaacLab's camera and vision tasks)
CAMERA_TASK = re.compile(r"(RGB|Depth|Camera|Vision|Visuomotor|ResNet|Theia)")
# The evaluator's evidence beside its metrics (MLflow params amlwire.<name>); a verdict is made of nothing less
EVIDENCE_PARAM_PREFIX = "amlwire."
EVIDENCE = ("task", "checkpoint_sha256", "seed", "num_envs")
EVALUATION_FAILED_MARK = "amlwire: evaluation failed:"
FAILURE_TAG = "amlwire.failure"  # the evaluator tags its MLflow run with why it failed


def aml_job_name(name: str, uid: str, attempt: int = 1) -> str:
    """Deterministic from the uid (and the attempt), so a restart adopts the job instead of submitting it again."""
    readable = re.sub(r"[^a-zA-Z0-9_-]", "-", name)[:60].strip("-_") or "job"
    base = f"{readable}-{uid.replace('-', '')[:12]}"
    return base if attempt <= 1 else f"{base}-a{attempt}"


@dataclass(frozen=True)
class ModelInput:
    type: str
    uri: str
    mode: str  # AML input mode: download | ro_mount


@dataclass(frozen=True)
class JobRequest:
    """Everything the adapter needs to build azure-ai-ml's command()."""

    name: str
    display_name: str
    experiment: str
    command: str
    image: str
    compute: str
    instance_type: str | None
    literal_inputs: dict[str, int | str]
    model: ModelInput | None
    checkpoint_output: str | None  # AML output type of ${{outputs.checkpoint}}, when there is one
    environment: dict[str, str]
    tags: dict[str, str]
    timeout_seconds: int | None = None
    identity: Literal["managed"] | None = "managed"  # the compute's identity, as the reference repos submit
    resume_from: str | None = None  # the AML job whose checkpoint output this attempt continues from
    # written while the job runs, so a hang, a timeout or a preemption keeps the last checkpoint
    checkpoint_mode: str = "rw_mount"


@dataclass(frozen=True)
class JobSnapshot:
    """What AML says about a job right now."""

    name: str
    status: str
    studio_url: str | None = None
    start_time: str | None = None
    end_time: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def gone(self) -> bool:
        """AML has no such job (any more)."""
        return self.status == GONE


GONE = ""  # the status of a job AML does not know


@dataclass(frozen=True)
class JobListing:
    """One listing of a workspace's jobs, and how many ARM reads (pages) it took."""

    jobs: dict[str, JobSnapshot]
    reads: int = 1


@dataclass(frozen=True)
class RunResults:
    """What a finished job logged to MLflow: its final metrics, and the params that say what they measured; and
    when its run started and ended, as MLflow's run info says (None where it says nothing)."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    start_time: str | None = None
    end_time: str | None = None


@dataclass(frozen=True)
class JobDetails:
    """Run history of a finished job: when it ran and, when it failed, AML's error."""

    start_time: str | None = None
    end_time: str | None = None
    error: Mapping[str, object] | None = None


def admit(spec: AmlJobSpec, namespace: str, compute: ComputeView | None, recheck: float) -> StepResult | None:
    """Why the job cannot be submitted yet (looked at again later), or None when it can.

    Refusals someone must fix are blocked (Stalled); a compute that is merely still reconciling (Azure busy or
    throttling) makes the job wait, Reconciling, not Stalled.
    """
    if compute is None:
        return blocked(
            r.SUBMITTED,
            r.COMPUTE_NOT_FOUND,
            f"AttachedCompute {spec.compute_ref} does not exist (kubectl get amlc); create it, or delete and "
            f"recreate this AmlJob with another spec.computeRef",
            recheck,
        )
    if namespace not in compute.allowed_namespaces:
        return blocked(
            r.SUBMITTED,
            r.NAMESPACE_NOT_ALLOWED,
            f"namespace {namespace} may not run jobs on AttachedCompute {compute.name}; a cluster "
            f"admin adds it to spec.jobs.allowedNamespaces of that AttachedCompute",
            recheck,
        )
    if spec.instance_type and compute.instance_types and spec.instance_type not in compute.instance_types:
        return blocked(
            r.SUBMITTED,
            r.INSTANCE_TYPE_NOT_FOUND,
            f"spec.instanceType {spec.instance_type} is not one of AttachedCompute {compute.name}'s "
            f"instance types ({', '.join(compute.instance_types)}); delete and recreate this AmlJob with one "
            f"of them, or add it to the AttachedCompute",
            recheck,
        )
    refusal = _gpu_refusal(spec, compute, recheck) or _pod_account_refusal(spec, compute, recheck)
    if refusal is not None:
        return refusal
    if not compute.ready:
        message = f"AttachedCompute {compute.name} is not Ready: {compute.ready_message}"
        if compute.stalled:
            return blocked(r.SUBMITTED, r.COMPUTE_NOT_READY, message, recheck)
        return progressing(r.SUBMITTED, r.COMPUTE_NOT_READY, message, recheck)
    return None


def _gpu_refusal(spec: AmlJobSpec, compute: ComputeView, recheck: float) -> StepResult | None:
    """Isaac Sim needs a GPU: an IsaacLab template on an instance type without one would fail after pulling a
    15 GB image. Only where the compute lists its instance types (else AML's own are unknown to amlwire)."""
    if spec.isaac_lab is None or not spec.instance_type or spec.instance_type not in compute.instance_types:
        return None
    if compute.gpus.get(spec.instance_type, 0) > 0:
        return None
    with_gpu = [name for name in compute.instance_types if compute.gpus.get(name, 0) > 0]
    return blocked(
        r.SUBMITTED,
        r.INSTANCE_TYPE_WITHOUT_GPU,
        f"spec.instanceType {spec.instance_type} of AttachedCompute {compute.name} has no nvidia.com/gpu limit, and "
        f"Isaac Sim cannot run without a GPU; delete and recreate this AmlJob with "
        + (f"one of {', '.join(with_gpu)}" if with_gpu else "an instance type that has one")
        + f", or give {spec.instance_type} resources.limits nvidia.com/gpu on the AttachedCompute",
        recheck,
    )


def _pod_account_refusal(spec: AmlJobSpec, compute: ComputeView, recheck: float) -> StepResult | None:
    """InContainer delivery downloads the model with the job pods' workload identity: their account must be
    federated, or the job would only fail on a GPU node."""
    if spec.model is None or spec.model.delivery != "InContainer":
        return None
    if subject_of(compute.compute_namespace, JOB_POD_ACCOUNT) in compute.subjects:
        return None
    return blocked(
        r.SUBMITTED,
        r.JOB_ACCOUNT_NOT_FEDERATED,
        f"spec.model.delivery InContainer downloads the model with the job pods' workload identity, and AML runs "
        f"them as {compute.compute_namespace}/{JOB_POD_ACCOUNT}, which AttachedCompute {compute.name} does not "
        f"federate: a cluster admin adds {{namespace: {compute.compute_namespace}, name: {JOB_POD_ACCOUNT}}} to its "
        f"spec.serviceAccounts (or use delivery Download)",
        recheck,
    )


def _flag(name: str, value: object) -> list[str]:
    return [] if value is None else [f"--{name}", str(value)]


def _isaaclab(script: str, *args: str) -> str:
    """A python step in Isaac Sim's python (`python3` is not reliably in the image, nor on its PATH)."""
    return f"cd {ISAACLAB_ROOT} && ./isaaclab.sh -p {script} {' '.join(shlex.quote(a) for a in args)}".rstrip()


def _pip(packages: Sequence[str]) -> str:
    return _isaaclab("-m", "pip", "install", "--quiet", *packages)


def _scripts(*names: str) -> list[str]:
    """Steps that write amlwire's step scripts (and jobkit, how each ends) into the container."""
    return [f"mkdir -p {STEPS_DIR}", *(embedded(name, f"{STEPS_DIR}/{name}") for name in ("jobkit.py", *names))]


def _common_args(lab: IsaacLabSpec) -> list[str]:
    args = ["--task", lab.task, *_flag("num_envs", lab.num_envs), *_flag("seed", lab.seed)]
    if lab.headless:
        args += ["--viz", "none"] if lab.version == "3" else ["--headless"]
    if CAMERA_TASK.search(lab.task) and "--enable_cameras" not in lab.extra_args:
        args.append("--enable_cameras")  # a camera task without it fails inside Isaac Sim
    return args


def _train_steps(lab: IsaacLabSpec, gpus: int, resumed: bool) -> list[str]:
    """Training writes its checkpoints straight into the output (logs/<framework> is a link to it, mounted
    read-write), so a hang, the timeout or a preemption keeps every checkpoint saved so far."""
    output = f"${{{{outputs.{CHECKPOINT_OUTPUT}}}}}"
    logs = f"logs/{lab.framework}"
    steps = [f"cd {ISAACLAB_ROOT}", f"mkdir -p {output} logs", f"rm -rf {logs}", f"ln -s {output} {logs}"]
    resume = ""
    if resumed:
        steps += [
            f"cp -r ${{{{inputs.{RESUME_INPUT}}}}}/. {output}/",
            *_scripts("resume.py"),
            _isaaclab(RESUMER, output, RESUME_ARGS),
        ]
        resume = f" $(cat {RESUME_ARGS})"
    args = [*_common_args(lab), *_flag("max_iterations", lab.max_iterations), *lab.extra_args]
    script = f"scripts/reinforcement_learning/{lab.framework}/train.py"
    if lab.version == "3":
        train = f"isaaclab train --rl_library {lab.framework} {' '.join(shlex.quote(a) for a in args)}"
    elif gpus > 1:  # one process per GPU, as IsaacLab's multi-GPU training runs
        launcher = ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={gpus}", script]
        train = _isaaclab(*launcher, *args, "--distributed")
    else:
        train = _isaaclab(script, *args)
    return [*steps, train.removeprefix(f"cd {ISAACLAB_ROOT} && ") + resume]


def _validate_steps(spec: AmlJobSpec, lab: IsaacLabSpec) -> list[str]:
    model = spec.model
    assert model is not None  # admission: IsaacLabValidate needs spec.model
    steps = [f'export {OUTPUTS}="$PWD/outputs"', f'mkdir -p "${OUTPUTS}"']
    checkpoint = "${{inputs.model}}"
    scripts = ["isaaclab_evaluate.py"]
    if model.delivery == "InContainer":
        scripts.append("fetch_model.py")
    steps += _scripts(*scripts)
    if model.delivery == "InContainer":
        if not lab.image_has_azure_sdk:
            steps.append(_pip(SDK_PACKAGES))
        steps.append(_isaaclab(FETCHER))
        checkpoint = MODEL_DIR
    if not lab.image_has_mlflow:
        steps.append(_pip(LOGGING_PACKAGES))
    evaluate = [*_common_args(lab), "--episodes", str(lab.episodes or DEFAULT_EPISODES)]
    evaluate += _flag("success_term", lab.success_term)
    evaluate += [] if lab.play_variant else ["--no-play_variant"]
    command = _isaaclab(EVALUATOR, *evaluate, *lab.extra_args)
    return [*steps, f"{command} --checkpoint {checkpoint}"]


def _command_steps(spec: AmlJobSpec, gpus: int, resumed: bool) -> list[str]:
    return [spec.command or ""]


def _isaaclab_train(spec: AmlJobSpec, gpus: int, resumed: bool) -> list[str]:
    assert spec.isaac_lab is not None  # the template needs spec.isaacLab (templates.py)
    return _train_steps(spec.isaac_lab, gpus, resumed)


def _isaaclab_validate(spec: AmlJobSpec, gpus: int, resumed: bool) -> list[str]:
    assert spec.isaac_lab is not None  # the template needs spec.isaacLab (templates.py)
    return _validate_steps(spec, spec.isaac_lab)


# Each template's command (a unit test proves every template in the registry has one).
COMMAND_BUILDERS: dict[str, Callable[[AmlJobSpec, int, bool], list[str]]] = {
    "IsaacLabTrain": _isaaclab_train,
    "IsaacLabValidate": _isaaclab_validate,
    "Command": _command_steps,
}


def build_command(spec: AmlJobSpec, gpus: int = 1, resumed: bool = False) -> str:
    """The shell command of the job; README section "What the templates run" shows each one."""
    return " && ".join(COMMAND_BUILDERS[spec.template](spec, gpus, resumed))


def build_request(
    spec: AmlJobSpec,
    namespace: str,
    name: str,
    uid: str,
    compute: ComputeView,
    attempts: Sequence[str] = (),
) -> JobRequest:
    """The AML job of the next attempt; `attempts` are the AML jobs of the earlier ones (a resumed training)."""
    model_input = None
    template = TEMPLATES[spec.template]
    environment = {**(ISAAC_SIM_CONSENT if template.isaaclab else {}), **spec.environment_variables}
    if spec.model is not None:
        reference = f"azureml:{spec.model.name}:{spec.model.version}"
        if spec.model.delivery == "InContainer":
            environment.update(
                {"AMLWIRE_MODEL": reference, "AMLWIRE_WORKSPACE": compute.workspace.id, "AMLWIRE_MODEL_DIR": MODEL_DIR}
            )
        else:
            mode = "ro_mount" if spec.model.delivery == "Mount" else "download"
            model_input = ModelInput(spec.model.type, reference, mode)
    wants_checkpoint = template.always_checkpoint or spec.registration is not None
    output_type = spec.registration.type if spec.registration else "custom_model"
    attempt = len(attempts) + 1
    gpus = compute.gpus.get(spec.instance_type or "", 1) or 1
    tags = {
        TAG_COMPUTE: compute.name,
        TAG_NAMESPACE: namespace,
        TAG_NAME: name,
        TAG_UID: uid,
        TAG_TEMPLATE: spec.template,
    }
    return JobRequest(
        name=aml_job_name(name, uid, attempt),
        display_name=(spec.display_name or f"{namespace}/{name}") + (f" (attempt {attempt})" if attempt > 1 else ""),
        experiment=spec.experiment or namespace,
        command=build_command(spec, gpus, resumed=bool(attempts)),
        image=spec.image,
        compute=compute.compute_name,
        instance_type=spec.instance_type,
        literal_inputs=dict(spec.inputs),
        model=model_input,
        checkpoint_output=output_type if wants_checkpoint else None,
        environment=environment,
        tags=tags | ({TAG_ATTEMPT: str(attempt)} if attempt > 1 else {}),
        timeout_seconds=spec.timeout_seconds or template.default_timeout,
        resume_from=attempts[-1] if attempts else None,
    )


def resumable(spec: AmlJobSpec, aml_status: str, failure_: FailureStatus | None, attempts: int) -> bool:
    """Whether an attempt that ended `aml_status` is followed by another from its last checkpoint: a training
    with spec.resume that failed, was canceled (its timeout, a preemption) — not one whose storage wiring is
    broken, which the next attempt would hit as well — and has attempts left."""
    resume = spec.resume
    if resume is None or resume.mode != "FromLastCheckpoint" or aml_status not in ("Failed", "Canceled"):
        return False
    if failure_ is not None and failure_.hint:
        return False
    return attempts + 1 < resume.max_attempts


def verdict(gate: GateSpec | None, metrics: Mapping[str, float]) -> Literal["Passed", "Failed"] | None:
    """Passed or Failed against the gate; None without a gate or without the metric (see `missing_evidence`)."""
    if gate is None:
        return None
    value = metrics.get(gate.metric)
    if value is None:
        return None
    passed = (gate.min is None or value >= gate.min) and (gate.max is None or value <= gate.max)
    return "Passed" if passed else "Failed"


def evidence_of(params: Mapping[str, str]) -> dict[str, str]:
    """What amlwire's evaluator says it measured (its MLflow params, without their prefix)."""
    prefix = EVIDENCE_PARAM_PREFIX
    return {k.removeprefix(prefix): str(v) for k, v in params.items() if k.startswith(prefix)}


def missing_evidence(
    spec: AmlJobSpec, metrics: Mapping[str, float], evidence: Mapping[str, str]
) -> FailureStatus | None:
    """Why a completed job's results cannot make a verdict, or None when they can.

    A validation needs amlwire's evaluator's evidence: metrics with an episode count and what they were measured
    on. Without it the job "completed" without evaluating (Isaac Sim's fast shutdown exits 0, for one): that is a
    failure with its reason, never a missed gate. Any job with a gate needs the metric the gate names.
    """
    if TEMPLATES[spec.template].evaluates:
        absent = [p for p in EVIDENCE if not evidence.get(p)]
        counted = metrics.get("episodes", 0) > 0
        if not counted or absent:
            return FailureStatus(
                code=r.NO_EVIDENCE,
                message="The AML job completed, but amlwire's evaluator left no evidence of an evaluation ("
                + ("no episodes counted" if not counted else "")
                + ("; " if not counted and absent else "")
                + (f"no {', '.join(absent)}" if absent else "")
                + "): the process ended with status 0 without evaluating (Isaac Sim's shutdown does that when close() "
                "is called early), so there is no verdict. Read the job's user_logs/std_log.txt in AML studio.",
            )
    if spec.gate is not None and spec.gate.metric not in metrics:
        logged = ", ".join(sorted(metrics)) or "none"
        return FailureStatus(
            code=r.GATE_METRIC_NOT_LOGGED,
            message=f"The AML job completed without logging metric {spec.gate.metric}, which spec.gate names "
            f"(metrics logged: {logged}); there is no verdict.",
        )
    return None


NOT_FEDERATED = "AADSTS70021"  # Entra: no federated credential matched the token's issuer and subject
SUBJECT = re.compile(r"[Ss]ubject:? ?'?(system:serviceaccount:[A-Za-z0-9.-]+:[A-Za-z0-9.-]+)")
STORAGE_SIGNS = (
    STREAM_AUTH,
    "StreamAccess",
    "permission denied when access stream",
    "Authentication failed when trying to access the stream",
    "AuthorizationPermissionMismatch",
    "KeyBasedAuthenticationNotPermitted",
    "AADSTS70021",
)


CERTIFICATE_SIGNS = ("failed to load certificate", ".pfx")


def sidecar_credential(failures: Sequence[str], succeeded: int, links_broken: bool) -> str:
    """How the data-capability sidecar gets its storage credential, as far as the evidence shows.

    Microsoft documents the compute's identity; the field sets up workload identity too; one field report saw
    certificate auth fail whatever the wiring (docs/sandbox.md, rule data.sidecar-credential).
    """
    if any(sign in text for text in failures for sign in CERTIFICATE_SIGNS):
        return (
            "certificate auth, failing (field failure F23): no Azure-side wiring fixes it; use spec.model.delivery: "
            "InContainer"
        )
    if any("AADSTS70021" in text or "identity settings" in text for text in failures):
        return (
            "workload identity: the extension's service accounts exchange tokens, so their FICs and the extension's "
            "identity settings matter"
        )
    if succeeded:
        return f"working ({succeeded} job(s) completed): the compute's identity (documented) or workload identity"
    if failures and not links_broken:
        return "failing with every documented and field-practice link in place: points to certificate auth (F23)"
    return "not known yet: no job on this compute has reached storage"


def hint(code: str, message: str, compute: ComputeHealth, delivery: str | None) -> str | None:
    """Map a storage-access failure (in any shape AML reports it) to the broken link and its fix, or None."""
    text = f"{code} {message}"
    if not any(sign in text for sign in STORAGE_SIGNS):
        return None
    broken = compute.broken()
    links = f"AttachedCompute {compute.name}: " + "; ".join(broken) if broken else ""
    if any(sign in text for sign in CERTIFICATE_SIGNS):
        where = (
            "the data-capability sidecar failed its certificate auth (field failure F23); no role, FIC or extension "
            "setting fixes that"
        )
    elif "KeyBasedAuthenticationNotPermitted" in text:
        where = (
            "the datastore authenticates with account keys but the storage account has shared-key access off "
            f"(field failure F17): no role or credential helps; {BY_ID['F17'].fix()}"
        )
    elif NOT_FEDERATED in text:  # the sidecar exchanges workload identity tokens: FICs matter
        where = _not_federated(SUBJECT.search(text), compute, links)
    elif "AuthorizationPermissionMismatch" in text:
        where = f"the identity lacks an effective Storage Blob Data role (F15/F16). {links}".strip()
    else:
        where = links or (
            f"AttachedCompute {compute.name} reports every link Ready, both the documented ones (the compute's "
            f"identity, the storage role) and the field-practice ones (FICs, extension identity settings), so the "
            f"data-capability sidecar itself is failing: {sidecar_credential([text], 0, False)}; run `amlwire "
            f"doctor {compute.name}`"
        )
    advice = (
        ""
        if delivery == "InContainer"
        else (
            " Or set spec.model.delivery: InContainer to download the model inside the job (with the pod's workload "
            "identity, or the compute's), bypassing the sidecar."
        )
    )
    return f"The job could not reach storage: {where.rstrip('.')}.{advice}"


def _not_federated(found: re.Match[str] | None, compute: ComputeHealth, links: str) -> str:
    """AADSTS70021: Entra found no federated credential for the token's subject (F04), or not yet."""
    if found is None:
        return f"no federated credential matched the job's service account (F04). {links}".strip()
    subject = found.group(1)
    namespace, name = subject.removeprefix("system:serviceaccount:").split(":", 1)
    if subject not in compute.subjects:
        return (
            f"no federated credential on {compute.identity} federates {subject} (field failure F04): add "
            f"{{namespace: {namespace}, name: {name}}} to spec.serviceAccounts of AttachedCompute {compute.name}"
        )
    if compute.federated is not None and subject not in compute.federated:
        return (
            f"no federated credential on {compute.identity} federates {subject} now, though AttachedCompute "
            f"{compute.name} lists it (field failure F04): it was removed or changed behind amlwire's back; "
            f"amlwire re-creates it (the job asked for a reconcile of {compute.name} now)"
        )
    if compute.federated is not None:
        return (
            f"the federated credential for {subject} exists on {compute.identity} but Entra did not honour it yet "
            f"(it was written moments ago; Entra takes up to a minute): run the job again. {links}".strip()
        )
    return (
        f"Entra matched no federated credential for {subject} (F04/F05), which AttachedCompute {compute.name} "
        f"lists: {links or 'its credential may still be propagating (FederationReady)'}"
    )


GENERIC_CODES = frozenset({"UserError", "SystemError", "ServiceError"})
STREAM_MESSAGES = ("permission denied when access stream", "Authentication failed when trying to access the stream")


def failure_code(error: Mapping[str, object]) -> str:
    """The most specific code of an AML error, in every shape AML may use: the innermost code when it is
    dotted already ({innerError: {code: A.B.C}}), the segments joined when nested one per segment
    ({code: A, innerError: {code: B, ...}}), and ScriptExecution.StreamAccess.Authentication when only the
    message says so."""
    chain = [str(error.get("code") or "UserError")]
    inner = error.get("innerError") or error.get("inner_error")
    while isinstance(inner, Mapping) and inner.get("code"):
        chain.append(str(inner["code"]))
        inner = inner.get("innerError") or inner.get("inner_error")
    specific = [code for code in chain if code not in GENERIC_CODES]
    if not specific:
        message = str(error.get("message") or "")
        return STREAM_AUTH if any(words in message for words in STREAM_MESSAGES) else chain[-1]
    return specific[-1] if "." in specific[-1] else ".".join(specific)


IMAGE_PULL = re.compile(r'Failed to pull image "(?P<image>[^"/]+/[^"]+)"')
REGISTRY_REFUSED = ("401", "403", "unauthorized", "forbidden", "denied")


def failure(code: str, message: str, compute: ComputeHealth, delivery: str | None) -> FailureStatus:
    said = hint(code, message, compute, delivery) or image_pull_hint(message, compute)
    return FailureStatus(code=code, message=message[:4000], hint=said)


def image_pull_hint(message: str, compute: ComputeHealth) -> str | None:
    """A private registry refused the image: the compute's identity pulls it and needs AcrPull there."""
    found = IMAGE_PULL.search(message)
    if found is None:
        return None
    image = found["image"]
    host = image.split("/", 1)[0]
    if not host.lower().endswith(".azurecr.io"):
        return f"The job's image {image} could not be pulled from {host}: check the image name and the registry."
    registry = host.split(".", 1)[0]
    if not any(word in message.lower() for word in REGISTRY_REFUSED):
        return f"The job's image {image} could not be pulled from registry {registry}: check that it exists there."
    return (
        f"The job's image {image} is in registry {registry}, which refused the compute's identity: it needs AcrPull "
        f"there. Add {{scope: <registry ID>, role: AcrPull}} to spec.access.grants of AttachedCompute {compute.name} "
        f"(az acr show -n {registry} --query id gives the ID)."
    )


def failure_reason(failure_: FailureStatus) -> str:
    """The summary reason of a job that failed or has no verdict: its image not pulled, storage access (whatever
    shape AML reported it in), amlwire's evaluator failing, no evidence or no gate metric, or JobFailed."""
    if IMAGE_PULL.search(failure_.message):
        return r.IMAGE_PULL_FAILED
    if failure_.hint:
        return r.STORAGE_ACCESS_FAILED
    if failure_.code in (r.NO_EVIDENCE, r.GATE_METRIC_NOT_LOGGED):
        return failure_.code
    return r.EVALUATION_FAILED if EVALUATION_FAILED_MARK in failure_.message else r.JOB_FAILED


def evaluation_failure(message: str) -> str | None:
    """The evaluator's own account of why it failed, from the end of the log AML reports, or None."""
    _, found, reason = message.rpartition(EVALUATION_FAILED_MARK)
    return reason.strip().splitlines()[0] if found and reason.strip() else None


def job_summary(aml_status: str | None, verdict_: str | None, failure_: FailureStatus | None) -> list[Summary]:
    """kstatus conditions of a submitted job: Ready once it finished and passed; Stalled when it ended otherwise."""
    if aml_status is None:
        return kstatus("reconciling", r.NOT_SUBMITTED, "The AML job is not submitted yet.")
    if aml_status not in TERMINAL:
        return kstatus("reconciling", aml_status, f"The AML job is {aml_status}.")
    ended = (aml_status, f"The AML job ended {aml_status}.")
    if aml_status == "Completed" and failure_ is not None:
        return kstatus("stalled", failure_reason(failure_), failure_.message, (r.COMPLETED, "The AML job completed."))
    if aml_status == "Completed" and verdict_ != "Failed":
        note = f" Verdict {verdict_}." if verdict_ else ""
        return kstatus("ready", r.COMPLETED, f"The AML job completed.{note}", (r.COMPLETED, "The AML job completed."))
    if aml_status == "Completed":
        return kstatus("stalled", r.VERDICT_FAILED, "The AML job completed but its metric missed spec.gate.", ended)
    if failure_ is not None:
        reason = failure_reason(failure_)
        why = evaluation_failure(failure_.message) if reason == r.EVALUATION_FAILED else None
        message = f"amlwire's evaluator failed: {why}" if why else failure_.hint or failure_.message
        return kstatus("stalled", reason, message, ended)
    return kstatus("stalled", aml_status, f"The AML job ended {aml_status}.", ended)


def runs_in_aml(status: Mapping[str, Any] | None) -> bool:
    """Whether an AmlJob's status says its AML job was submitted and has not ended."""
    status = status or {}
    return bool(status.get("amlJobName")) and status.get("amlStatus") not in TERMINAL
