"""amlwire lint: checks of AML job YAML (az ml v2 format) before submission, with file, line and field.

Pure: text in, findings out. Rule ids F20-F22 are field failures (docs/troubleshooting.md); Lnn are the
other mistakes the service would reject, or that make jobs fail later.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal

import yaml

from amlwire.domain.jobs import CAMERA_TASK

Severity = Literal["error", "warning"]
LITERAL_TYPES = {"string", "integer", "number", "boolean"}
DATA_TYPES = {"uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model", "triton_model"}
INPUT_MODES = {"ro_mount", "rw_mount", "download", "direct", "eval_mount", "eval_download"}
OUTPUT_MODES = {"rw_mount", "upload", "direct"}
# What every job YAML may say (the schema's base job), then what each kind adds.
JOB_KEYS = {"$schema", "type", "name", "display_name", "description", "tags", "properties", "experiment_name"}
COMMAND_KEYS = JOB_KEYS | {
    "command",
    "code",
    "environment",
    "environment_variables",
    "distribution",
    "compute",
    "resources",
    "limits",
    "inputs",
    "outputs",
    "identity",
    "services",
    "queue_settings",
    "status",
}
PIPELINE_KEYS = JOB_KEYS | {
    "compute",
    "settings",
    "inputs",
    "outputs",
    "jobs",
    "identity",
    "status",
}
INPUT_KEYS = {"type", "path", "mode", "description", "optional", "default", "value", "datastore"}
OUTPUT_KEYS = {"type", "path", "mode", "description", "name", "version"}
CHECKPOINT_FILE = re.compile(r"\.(pt|pth|ckpt|onnx|zip|pkl|bin|safetensors)$|/outputs/checkpoint/?$", re.IGNORECASE)
REFERENCE = re.compile(
    r"^azureml:(?:"
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?::(?P<version>[A-Za-z0-9_.-]+)|@(?P<label>latest))?"  # azureml:name:ver
    r"|/subscriptions/.+"  # azureml:<ARM ID>
    r"|//.+"  # azureml://datastores/..., azureml://jobs/..., azureml://registries/...
    r")$"
)
# a registered model whose name says it holds a checkpoint (what training jobs register, as custom_model)
REGISTERED_CHECKPOINT = re.compile(r"^azureml:[A-Za-z0-9_.-]*(checkpoint|ckpt)[A-Za-z0-9_.-]*:[A-Za-z0-9_.-]+$", re.I)
UNQUOTED = {"tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"}
FLOAT_LIKE = re.compile(r"^[-+]?(\d+\.\d*|\.\d+|\d+\.?\d*[eE][-+]?\d+)$")  # kubectl's YAML reads 3e-4 as a number
BINDING = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z0-9_]+)\s*\}\}")
CAMERA_ARGUMENT = re.compile(r"--task[= ]'?([A-Za-z0-9_.:-]*" + CAMERA_TASK.pattern + r"[A-Za-z0-9_.:-]*)")


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    field: str
    rule: str
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity} {self.rule} {self.field}: {self.message}"


class _Lint:
    def __init__(self, path: str, gpus: dict[str, dict[str, int]] | None = None) -> None:
        self.path = path
        self.findings: list[Finding] = []
        self.gpus = gpus or {}  # AttachedCompute name -> instance type -> nvidia.com/gpu limit

    def add(self, node: yaml.Node | None, field: str, rule: str, message: str, severity: Severity = "error") -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.findings.append(Finding(self.path, line, field, rule, severity, message))


def _items(node: yaml.Node) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield str(key.value), key, value


def _get(node: yaml.Node, key: str) -> yaml.Node | None:
    return next((value for name, _, value in _items(node) if name == key), None)


def _scalar(node: yaml.Node | None) -> str | None:
    return str(node.value) if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:null" else None


def lint_text(text: str, path: str = "<job>") -> list[Finding]:
    """Every document of a file: AML job YAML, or an amlwire AmlJob manifest."""
    return lint_files([(text, path)])


def lint_files(files: list[tuple[str, str]]) -> list[Finding]:
    """Every document of every (text, path): AttachedComputes among them tell the instance types AmlJobs name."""
    parsed = [(path, _compose(text, path)) for text, path in files]
    gpus = {
        name: types
        for _, (documents, _) in parsed
        for document in documents
        if (found := _compute_gpus(document)) is not None
        for name, types in [found]
    }
    findings: list[Finding] = []
    for path, (documents, broken) in parsed:
        lint = _Lint(path, gpus)
        lint.findings += broken
        for document in documents:
            _document(lint, document)
        findings += sorted(lint.findings, key=lambda f: (f.line, f.rule))
    return findings


def _compute_gpus(document: yaml.Node | None) -> tuple[str, dict[str, int]] | None:
    """An AttachedCompute's name and the nvidia.com/gpu limit of each of its instance types."""
    if not isinstance(document, yaml.MappingNode) or _scalar(_get(document, "kind")) != "AttachedCompute":
        return None
    name = _scalar(_get(_get(document, "metadata") or document, "name"))
    compute = _get(_get(document, "spec") or document, "compute")
    types = _get(compute, "instanceTypes") if compute is not None else None
    if name is None or not isinstance(types, yaml.SequenceNode):
        return None
    found: dict[str, int] = {}
    for item in types.value:
        limits = _get(_get(item, "resources") or item, "limits")
        gpus = _scalar(_get(limits, "nvidia.com/gpu")) if limits is not None else None
        type_name = _scalar(_get(item, "name"))
        if type_name is not None:
            found[type_name] = int(gpus) if gpus and gpus.isdigit() else 0
    return name, found


def _compose(text: str, path: str) -> tuple[list[yaml.Node | None], list[Finding]]:
    try:
        return [d for d in yaml.compose_all(text) if d is not None] or [None], []
    except yaml.YAMLError as error:
        # where the broken construct began (an unclosed bracket) is where to look, not where YAML gave up
        problem, context = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
        mark = context or problem
        detail = f"{getattr(error, 'problem', error)}"
        if context is not None and problem is not None and problem.line != context.line:
            what = re.sub(r"^while parsing (an? )?", "", str(getattr(error, "context", "") or "construct"))
            detail += f" (the {what} that starts on line {context.line + 1} is still open at line {problem.line + 1})"
        return [], [
            Finding(path, (mark.line + 1) if mark else 1, "<document>", "L01", "error", f"not valid YAML: {detail}")
        ]


def _document(lint: _Lint, document: yaml.Node | None) -> None:
    if not isinstance(document, yaml.MappingNode):
        lint.add(document, "<document>", "L01", "an AML job is a YAML mapping (type, command, environment, ...)")
        return
    kind = _scalar(_get(document, "kind"))
    if kind == "AmlJob" and (_scalar(_get(document, "apiVersion")) or "").startswith("amlwire.io/"):
        _aml_job_manifest(lint, document)
        return
    if kind is not None and _get(document, "apiVersion") is not None:
        lint.add(
            _get(document, "kind"),
            "kind",
            "L10",
            f"a Kubernetes {kind}, not an AML job: `kubectl apply --dry-run=server -f FILE` checks it",
            "warning",
        )
        return
    if not {name for name, _, _ in _items(document)} & (COMMAND_KEYS | PIPELINE_KEYS):
        lint.add(
            document,
            "<document>",
            "L10",
            "neither an AML job (no type, command, jobs or environment) nor a Kubernetes object: skipped",
            "warning",
        )
        return
    job_type = _scalar(_get(document, "type")) or "command"
    if job_type == "command":
        _command_job(lint, document, "", pipeline_child=False)
    elif job_type == "pipeline":
        _pipeline_job(lint, document)
    else:
        lint.add(
            _get(document, "type"),
            "type",
            "L10",
            f"job type {job_type!r} is not checked by amlwire lint (command and pipeline are)",
            "warning",
        )


def _not_int_or_string(value: yaml.ScalarNode) -> bool:
    """Written bare, a value kubectl sends as a float or a boolean (PyYAML reads 3e-4 as a string; Go does not)."""
    return value.tag in UNQUOTED or bool(FLOAT_LIKE.match(value.value))


def _aml_job_manifest(lint: _Lint, document: yaml.Node) -> None:
    """An amlwire AmlJob: its inputs are plain values (F20, F21) and its command binds only declared inputs.
    The rest of its schema is the apiserver's to check (`kubectl apply --dry-run=server -f FILE`)."""
    spec = _get(document, "spec")
    if not isinstance(spec, yaml.MappingNode):
        lint.add(spec or document, "spec", "L01", "an AmlJob needs a spec: mapping")
        return
    inputs = _get(spec, "inputs")
    for name, _, value in _items(inputs) if inputs is not None else ():
        field = f"spec.inputs.{name}"
        if isinstance(value, yaml.MappingNode):
            lint.add(
                value,
                field,
                "F20",
                "AmlJob inputs are plain values (command jobs take literals as they are): write "
                f"`{name}: VALUE`, not a mapping with type/default",
            )
        elif isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:str" and value.value == "":
            lint.add(value, field, "F21", "empty string input: AML rejects it; omit the input or use a sentinel")
        elif isinstance(value, yaml.ScalarNode) and value.style is None and _not_int_or_string(value):
            lint.add(
                value,
                field,
                "F20",
                f"{value.value} reaches the apiserver as a number or a boolean, not an integer or a string; "
                f'quote it: {name}: "{value.value}"',
            )
    declared = {n for n, _, _ in _items(inputs)} if inputs is not None else set()
    command = _get(spec, "command")
    _gpu_for_isaaclab(lint, spec)
    _cameras(lint, command, "spec.command")
    for kind, name in BINDING.findall(_scalar(command) or ""):
        if kind == "inputs" and name not in declared and name != "model":
            lint.add(
                command,
                "spec.command",
                "L08",
                f"${{{{inputs.{name}}}}} is used but spec.inputs.{name} is not declared",
            )


def _gpu_for_isaaclab(lint: _Lint, spec: yaml.Node) -> None:
    """An IsaacLab template on an instance type without a GPU, where the AttachedCompute is among the files."""
    template, instance = _scalar(_get(spec, "template")), _get(spec, "instanceType")
    types = lint.gpus.get(_scalar(_get(spec, "computeRef")) or "")
    if not (template or "").startswith("IsaacLab") or types is None or _scalar(instance) not in types:
        return
    if types[_scalar(instance) or ""] > 0:
        return
    with_gpu = [name for name, count in types.items() if count > 0]
    lint.add(
        instance,
        "spec.instanceType",
        "L12",
        f"instance type {_scalar(instance)} has no nvidia.com/gpu limit and Isaac Sim needs a GPU: amlwire refuses "
        f"the job (InstanceTypeWithoutGPU); use {' or '.join(with_gpu) or 'an instance type with a GPU'}",
    )


def _cameras(lint: _Lint, command: yaml.Node | None, field: str) -> None:
    """An IsaacLab camera task run without --enable_cameras fails inside Isaac Sim."""
    text = _scalar(command) or ""
    task = CAMERA_ARGUMENT.search(text)
    if task is not None and "--enable_cameras" not in text:
        lint.add(
            command,
            field,
            "L13",
            f"task {task.group(1)} renders with cameras, and Isaac Sim refuses to spawn them without "
            "--enable_cameras: add it to the command",
            "warning",
        )


def _command_job(lint: _Lint, job: yaml.Node, prefix: str, pipeline_child: bool) -> None:
    for name, key, _ in _items(job):
        if name not in COMMAND_KEYS:
            lint.add(
                key,
                prefix + name,
                "L02",
                f"unknown key {name!r} in a command job (did you mean one of "
                f"{', '.join(_close(name, COMMAND_KEYS)) or 'the documented keys'}?)",
            )
    command = _get(job, "command")
    if _scalar(command) is None:
        lint.add(command or job, prefix + "command", "L05", "a command job needs `command:`")
    if _get(job, "environment") is None:
        lint.add(
            job,
            prefix + "environment",
            "L04",
            "a command job needs `environment:` (azureml:NAME:VERSION, or a mapping with image:)",
        )
    if _get(job, "compute") is None and not pipeline_child:
        lint.add(
            job,
            prefix + "compute",
            "L03",
            "no `compute:`: the job would run on the workspace's default "
            "compute (serverless), not on your Kubernetes compute; set compute: azureml:<name>",
        )
    _references(lint, job, prefix)
    inputs = _get(job, "inputs")
    outputs = _get(job, "outputs")
    for name, key, value in _items(inputs) if inputs is not None else ():
        _input(lint, prefix + f"inputs.{name}", key, value, command_job=True)
    for name, key, value in _items(outputs) if outputs is not None else ():
        _output(lint, prefix + f"outputs.{name}", key, value)
    if not pipeline_child and _get(job, "identity") is None and _reads_data(job):
        _identity_unsaid(lint, job, prefix)
    _cameras(lint, command, prefix + "command")
    text = _scalar(command) or ""
    declared = {
        "inputs": {n for n, _, _ in _items(inputs)} if inputs else set(),
        "outputs": {n for n, _, _ in _items(outputs)} if outputs else set(),
    }
    for kind, name in BINDING.findall(text):
        if name not in declared[kind]:
            lint.add(
                command,
                prefix + "command",
                "L08",
                f"${{{{{kind}.{name}}}}} is used but {kind}.{name} is not declared under {kind}:",
            )


def _pipeline_job(lint: _Lint, job: yaml.Node) -> None:
    for name, key, _ in _items(job):
        if name not in PIPELINE_KEYS:
            lint.add(key, name, "L02", f"unknown key {name!r} in a pipeline job")
    inputs = _get(job, "inputs")
    for name, key, value in _items(inputs) if inputs is not None else ():
        _input(lint, f"inputs.{name}", key, value, command_job=False)
    children = _get(job, "jobs")
    if children is None:
        lint.add(job, "jobs", "L05", "a pipeline job needs `jobs:`")
        return
    for name, _, child in _items(children):
        if _get(job, "identity") is None and _get(child, "identity") is None and _reads_data(child):
            _identity_unsaid(lint, child, f"jobs.{name}.")
        if (_scalar(_get(child, "type")) or "command") == "command":
            _command_job(
                lint,
                child,
                f"jobs.{name}.",
                pipeline_child=_get(job, "settings") is not None or _get(job, "compute") is not None,
            )


def _reads_data(job: yaml.Node) -> bool:
    """Whether the job reads a datastore or data asset (its own inputs, not bindings to a parent's)."""
    inputs = _get(job, "inputs")
    return any(
        isinstance(value, yaml.MappingNode)
        and _scalar(_get(value, "type")) in DATA_TYPES
        and (_scalar(_get(value, "path")) or "").startswith("azureml:")
        for _, _, value in (_items(inputs) if inputs is not None else ())
    )


def _identity_unsaid(lint: _Lint, job: yaml.Node, prefix: str) -> None:
    lint.add(
        job,
        prefix + "identity",
        "L11",
        "reads data without `identity:`: from an identity-based datastore AML then reads as the compute's managed "
        "identity (on serverless, as you); say which (identity: {type: managed} or {type: user_identity}) and "
        "give that principal a Storage Blob Data role (amlwire doctor --compute NAME --job-identity ... names it)",
        "warning",
    )


def _input(lint: _Lint, field: str, key: yaml.Node, value: yaml.Node, command_job: bool) -> None:
    if isinstance(value, yaml.ScalarNode):
        if value.tag == "tag:yaml.org,2002:str" and value.value == "":
            lint.add(
                value,
                field,
                "F21",
                'empty string input: AML rejects it ("Empty string is not allowed for '
                'input value"); omit the input or use a sentinel',
            )
        return
    if not isinstance(value, yaml.MappingNode):
        lint.add(value, field, "L07", "an input is a plain value or a mapping with type and path")
        return
    for name, sub_key, _ in _items(value):
        if name not in INPUT_KEYS:
            lint.add(sub_key, f"{field}.{name}", "L02", f"unknown key {name!r} in an input")
    kind = _scalar(_get(value, "type"))
    if kind in LITERAL_TYPES:
        if command_job:
            default = _scalar(_get(value, "default")) or _scalar(_get(value, "value")) or "..."
            lint.add(
                key,
                field,
                "F20",
                f"typed literal input (type: {kind}) in a command job; command jobs take "
                f"plain values: {field.rsplit('.', 1)[-1]}: {default}",
            )
        return
    if kind is None:
        lint.add(key, field, "L07", f"input without `type:` (one of {', '.join(sorted(DATA_TYPES))})")
        return
    if kind not in DATA_TYPES:
        hint = " (did you mean mlflow_model?)" if kind.startswith("mlflow") else ""
        lint.add(
            _get(value, "type"),
            f"{field}.type",
            "L07",
            f"unknown input type {kind!r}{hint}; one of {', '.join(sorted(DATA_TYPES | LITERAL_TYPES))}",
        )
    _known_mode(lint, value, field, "input", INPUT_MODES)
    path = _scalar(_get(value, "path"))
    if path is None:
        lint.add(value, f"{field}.path", "L07", "a data or model input needs `path:`")
    elif kind == "mlflow_model" and CHECKPOINT_FILE.search(path):
        lint.add(
            _get(value, "type"),
            f"{field}.type",
            "F22",
            f"{path!r} looks like a plain checkpoint, not an MLflow model (no MLmodel file); use type: custom_model",
        )
    elif kind == "mlflow_model" and REGISTERED_CHECKPOINT.match(path):
        lint.add(
            _get(value, "type"),
            f"{field}.type",
            "F22",
            f"{path!r} is named as a checkpoint: a checkpoint registered from a training job is custom_model, not "
            f"an MLflow model (check: az ml model show --name NAME --version VERSION; MLflow models have MLmodel)",
            "warning",
        )
    if path is not None and path.startswith("azureml:"):
        _reference(lint, _get(value, "path"), f"{field}.path", path)


def _output(lint: _Lint, field: str, key: yaml.Node, value: yaml.Node) -> None:
    if not isinstance(value, yaml.MappingNode):
        return
    for name, sub_key, _ in _items(value):
        if name not in OUTPUT_KEYS:
            lint.add(sub_key, f"{field}.{name}", "L02", f"unknown key {name!r} in an output")
    _known_mode(lint, value, field, "output", OUTPUT_MODES)


def _known_mode(lint: _Lint, value: yaml.Node, field: str, what: str, modes: Collection[str]) -> None:
    mode = _scalar(_get(value, "mode"))
    if mode is not None and mode not in modes:
        message = f"unknown {what} mode {mode!r}; one of {', '.join(sorted(modes))}"
        lint.add(_get(value, "mode"), f"{field}.mode", "L07", message)


def _references(lint: _Lint, job: yaml.Node, prefix: str) -> None:
    environment = _get(job, "environment")
    if _scalar(environment) is not None:
        _reference(lint, environment, prefix + "environment", _scalar(environment) or "")
    compute = _scalar(_get(job, "compute"))
    if compute is not None and not compute.startswith("azureml:") and not compute.startswith("${{"):
        lint.add(
            _get(job, "compute"),
            prefix + "compute",
            "L06",
            f"compute {compute!r} should be written azureml:{compute}",
            "warning",
        )


def _reference(lint: _Lint, node: yaml.Node | None, field: str, text: str) -> None:
    match = REFERENCE.match(text)
    if match is None:
        lint.add(
            node,
            field,
            "L06",
            f"{text!r} is not a valid reference: azureml:NAME:VERSION, azureml:NAME@latest, "
            "azureml:<ARM ID> or an azureml:// URI",
        )
    elif match["name"] and not match["version"] and not match["label"] and "compute" not in field:
        lint.add(
            node,
            field,
            "L09",
            f"{text!r} names no version: pin one (azureml:{match['name']}:<version>) or "
            f"say azureml:{match['name']}@latest",
            "warning",
        )


def _close(name: str, known: set[str]) -> list[str]:
    return difflib.get_close_matches(name, sorted(known), n=2)
