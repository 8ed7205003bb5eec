"""AmlJob: the AML command job a spec stands for, and how AML's answer becomes status (pure)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from amlwire.api import reasons as r
from amlwire.api.amljob import AmlJobSpec, FailureStatus, GateSpec
from amlwire.domain.conditions import StepResult, Summary, blocked, kstatus, progressing
from amlwire.domain.failures import BY_ID
from amlwire.domain.view import ComputeHealth, ComputeView
from amlwire.templates import embedded

ISAACLAB_ROOT = "/workspace/isaaclab"
EVALUATOR = "/tmp/amlwire_evaluate.py"  # noqa: S108 - a path inside the job's container
FETCHER = "/tmp/amlwire_fetch_model.py"  # noqa: S108
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
DEFAULT_EPISODES = 100
# What the stock IsaacLab image lacks for MLflow logging to AML (the reference repos install both)
LOGGING_PACKAGES = ("mlflow==2.15.1", "azureml-mlflow==1.57.0")
ISAAC_SIM_CONSENT = {"ACCEPT_EULA": "Y", "PRIVACY_CONSENT": "Y"}  # Isaac Sim refuses to start without them
DEFAULT_TIMEOUTS = {"IsaacLabTrain": 24 * 3600, "IsaacLabValidate": 2 * 3600}
OUTPUTS = "AMLWIRE_OUTPUTS"  # the job's ./outputs, absolute: AML uploads it from where the job started


def aml_job_name(name: str, uid: str) -> str:
    """Deterministic from the uid, so a restart adopts the job instead of submitting it again."""
    readable = re.sub(r"[^a-zA-Z0-9_-]", "-", name)[:60].strip("-_") or "job"
    return f"{readable}-{uid.replace('-', '')[:12]}"


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
    if not compute.ready:
        message = f"AttachedCompute {compute.name} is not Ready: {compute.ready_message}"
        if compute.stalled:
            return blocked(r.SUBMITTED, r.COMPUTE_NOT_READY, message, recheck)
        return progressing(r.SUBMITTED, r.COMPUTE_NOT_READY, message, recheck)
    return None


def _flag(name: str, value: object) -> list[str]:
    return [] if value is None else [f"--{name}", str(value)]


def _isaaclab(script: str, *args: str) -> str:
    """A python step in Isaac Sim's python (`python3` is not reliably in the image, nor on its PATH)."""
    return f"cd {ISAACLAB_ROOT} && ./isaaclab.sh -p {script} {' '.join(shlex.quote(a) for a in args)}".rstrip()


def build_command(spec: AmlJobSpec) -> str:
    """The shell command of the job; README section "What the templates run" shows each one."""
    if spec.template == "Command":
        return spec.command or ""
    lab = spec.isaac_lab
    assert lab is not None  # admission: IsaacLab templates need spec.isaacLab
    common = ["--task", lab.task, *_flag("num_envs", lab.num_envs), *_flag("seed", lab.seed)]
    common += ["--headless"] if lab.headless else []
    if spec.template == "IsaacLabTrain":
        script = f"scripts/reinforcement_learning/{lab.framework}/train.py"
        train = _isaaclab(script, *common, *_flag("max_iterations", lab.max_iterations), *lab.extra_args)
        output = "${{outputs.checkpoint}}"
        return f"{train} && mkdir -p {output} && cp -r logs/{lab.framework}/. {output}/"
    model = spec.model
    assert model is not None  # admission: IsaacLabValidate needs spec.model
    steps = [f'export {OUTPUTS}="$PWD/outputs"', f'mkdir -p "${OUTPUTS}"']
    checkpoint = "${{inputs.model}}"
    if model.delivery == "InContainer":
        steps += [embedded("fetch_model.py", FETCHER), _isaaclab(FETCHER)]
        checkpoint = MODEL_DIR
    steps.append(embedded("isaaclab_evaluate.py", EVALUATOR))
    if not lab.image_has_mlflow:
        steps.append(_isaaclab("-m", "pip", "install", "--quiet", *LOGGING_PACKAGES))
    evaluate = [*common, "--checkpoint", "CHECKPOINT", "--episodes", str(lab.episodes or DEFAULT_EPISODES)]
    evaluate += _flag("success_term", lab.success_term)
    steps.append(_isaaclab(EVALUATOR, *evaluate, *lab.extra_args).replace("CHECKPOINT", checkpoint))
    return " && ".join(steps)


def build_request(
    spec: AmlJobSpec,
    namespace: str,
    name: str,
    uid: str,
    compute_name: str,
    attached: str,
    workspace_id: str,
) -> JobRequest:
    model_input = None
    isaaclab = spec.template in DEFAULT_TIMEOUTS
    environment = {**(ISAAC_SIM_CONSENT if isaaclab else {}), **spec.environment_variables}
    if spec.model is not None:
        reference = f"azureml:{spec.model.name}:{spec.model.version}"
        if spec.model.delivery == "InContainer":
            environment.update(
                {"AMLWIRE_MODEL": reference, "AMLWIRE_WORKSPACE": workspace_id, "AMLWIRE_MODEL_DIR": MODEL_DIR}
            )
        else:
            mode = "ro_mount" if spec.model.delivery == "Mount" else "download"
            model_input = ModelInput(spec.model.type, reference, mode)
    wants_checkpoint = spec.template == "IsaacLabTrain" or spec.registration is not None
    output_type = spec.registration.type if spec.registration else "custom_model"
    return JobRequest(
        name=aml_job_name(name, uid),
        display_name=spec.display_name or f"{namespace}/{name}",
        experiment=spec.experiment or namespace,
        command=build_command(spec),
        image=spec.image,
        compute=compute_name,
        instance_type=spec.instance_type,
        literal_inputs=dict(spec.inputs),
        model=model_input,
        checkpoint_output=output_type if wants_checkpoint else None,
        environment=environment,
        tags={
            TAG_COMPUTE: attached,
            TAG_NAMESPACE: namespace,
            TAG_NAME: name,
            TAG_UID: uid,
            TAG_TEMPLATE: spec.template,
        },
        timeout_seconds=spec.timeout_seconds or DEFAULT_TIMEOUTS.get(spec.template),
    )


def verdict(gate: GateSpec | None, metrics: Mapping[str, float]) -> Literal["Passed", "Failed"] | None:
    """Passed or Failed against the gate; None without a gate (or before the metric is known)."""
    if gate is None:
        return None
    value = metrics.get(gate.metric)
    if value is None:
        return "Failed"
    passed = (gate.min is None or value >= gate.min) and (gate.max is None or value <= gate.max)
    return "Passed" if passed else "Failed"


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
    elif "AADSTS70021" in text:  # the sidecar exchanges workload identity tokens: FICs matter
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


def failure(code: str, message: str, compute: ComputeHealth, delivery: str | None) -> FailureStatus:
    return FailureStatus(code=code, message=message[:4000], hint=hint(code, message, compute, delivery))


def failure_reason(failure_: FailureStatus) -> str:
    """The summary reason of a failed job: storage access (whatever shape AML reported it in) or JobFailed."""
    return r.STORAGE_ACCESS_FAILED if failure_.hint else r.JOB_FAILED


def job_summary(aml_status: str | None, verdict_: str | None, failure_: FailureStatus | None) -> list[Summary]:
    """kstatus conditions of a submitted job: Ready once it finished and passed; Stalled when it ended otherwise."""
    if aml_status is None:
        return kstatus("reconciling", r.NOT_SUBMITTED, "The AML job is not submitted yet.")
    if aml_status not in TERMINAL:
        return kstatus("reconciling", aml_status, f"The AML job is {aml_status}.")
    ended = (aml_status, f"The AML job ended {aml_status}.")
    if aml_status == "Completed" and verdict_ != "Failed":
        note = f" Verdict {verdict_}." if verdict_ else ""
        return kstatus("ready", r.COMPLETED, f"The AML job completed.{note}", (r.COMPLETED, "The AML job completed."))
    if aml_status == "Completed":
        return kstatus("stalled", r.VERDICT_FAILED, "The AML job completed but its metric missed spec.gate.", ended)
    if failure_ is not None:
        return kstatus("stalled", failure_reason(failure_), failure_.hint or failure_.message, ended)
    return kstatus("stalled", aml_status, f"The AML job ended {aml_status}.", ended)
