"""The AmlJob templates: one registry of what each template needs, allows and defaults to.

Admission's CEL rules and the model's own check are both generated from these entries (`TemplateRule`), so the
apiserver and the operator cannot disagree; the command builders, timeouts and outputs read the same entries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from amlwire.api.common import cel_string

Template = Literal["IsaacLabTrain", "IsaacLabValidate", "Command"]
Framework = Literal["rsl_rl", "skrl", "rl_games", "sb3"]
# What amlwire's evaluator logs (templates/isaaclab_evaluate.py METRICS; a unit test keeps the two equal)
EVALUATOR_METRICS = ("success_rate", "success_rate_ci_low", "success_rate_ci_high", "mean_episode_reward", "episodes")

# The spec fields a template can need or refuse: JSON name -> (Python attribute, a string that must not be empty)
FieldName = Literal["model", "command", "isaacLab", "instanceType"]
SPEC_FIELDS: dict[FieldName, tuple[str, bool]] = {
    "model": ("model", False),
    "command": ("command", True),
    "isaacLab": ("isaac_lab", False),
    "instanceType": ("instance_type", True),
}
FIELD_NAMES: tuple[FieldName, ...] = tuple(SPEC_FIELDS)


@dataclass(frozen=True)
class TemplateInfo:
    name: Template
    isaaclab: bool  # runs an IsaacLab script in Isaac Sim
    needs: tuple[FieldName, ...] = ()
    refuses: tuple[FieldName, ...] = ()
    frameworks: tuple[Framework, ...] = ()  # the isaacLab.framework values it takes (empty: any)
    gate_metrics: tuple[str, ...] = ()  # what spec.gate.metric may name (empty: any the job logs)
    resumable: tuple[Framework, ...] = ()  # frameworks whose runs spec.resume can continue (empty: no resume)
    default_timeout: int | None = None  # seconds; Isaac Sim can hang instead of exiting
    always_checkpoint: bool = False  # has the checkpoint output even without spec.register
    evaluates: bool = False  # runs amlwire's evaluator: its evidence makes the verdict, its words the failure


TEMPLATES: tuple[TemplateInfo, ...] = (
    TemplateInfo(
        "IsaacLabTrain",
        isaaclab=True,
        needs=("isaacLab", "instanceType"),
        resumable=("rsl_rl",),
        default_timeout=24 * 3600,
        always_checkpoint=True,
    ),
    TemplateInfo(
        "IsaacLabValidate",
        isaaclab=True,
        needs=("model", "isaacLab", "instanceType"),
        frameworks=("rsl_rl",),
        gate_metrics=EVALUATOR_METRICS,
        default_timeout=2 * 3600,
        evaluates=True,
    ),
    TemplateInfo("Command", isaaclab=False, needs=("command",), refuses=("isaacLab",)),
)
BY_NAME = {t.name: t for t in TEMPLATES}
ISAACLAB_TEMPLATES = tuple(t.name for t in TEMPLATES if t.isaaclab)

# What each rule says when it fails: the field and the fix.
NEEDS = {
    "model": "spec.model is required when spec.template is {templates}: name the registered checkpoint to validate "
    "(spec.model.name and spec.model.version)",
    "command": "spec.command is required when spec.template is {templates}",
    "isaacLab": "spec.isaacLab.task is required when spec.template is {templates}, "
    "e.g. isaacLab: {{task: Isaac-Velocity-Rough-Anymal-C-v0}}",
    "instanceType": "spec.instanceType is required for the IsaacLab templates: without it AML runs the job on "
    "defaultinstancetype (100m CPU, 2 GiB, no GPU), where Isaac Sim cannot start, so name one of the "
    "AttachedCompute's spec.compute.instanceTypes",
}
REFUSES = {
    "isaacLab": "spec.isaacLab is only used by the IsaacLab templates; remove it or pick template "
    + " or ".join(ISAACLAB_TEMPLATES),
}
FRAMEWORK = (
    "spec.isaacLab.framework must be {frameworks} for template {template} (amlwire's evaluator loads "
    "{frameworks} checkpoints); for other frameworks use template Command with your own evaluation script"
)
GATE_METRIC = (
    "spec.gate.metric must be one amlwire's evaluator logs for template {template}: {metrics} "
    "(gate on success_rate_ci_low to require the lower bound of the 95% interval)"
)
RESUME = (
    "spec.resume is for template {templates} with framework {frameworks} (amlwire continues {frameworks} runs with "
    "--resume --load_run --checkpoint); remove it"
)


@dataclass(frozen=True)
class TemplateRule:
    """One admission rule, as CEL for the apiserver and as a Python predicate for the operator's own parse."""

    cel: str
    message: str
    field_path: str
    holds: Callable[[Any], bool]  # over an AmlJobSpec

    def schema(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message, "fieldPath": self.field_path}


def _names(values: Sequence[str]) -> str:
    return "[" + ", ".join(cel_string(v) for v in values) + "]"


def _present(spec: Any, field: FieldName) -> bool:
    attribute, non_empty = SPEC_FIELDS[field]
    value = getattr(spec, attribute)
    return value is not None and (not non_empty or value != "")


def _has(field: FieldName) -> str:
    return f"has(self.{field})" + (f" && size(self.{field}) > 0" if SPEC_FIELDS[field][1] else "")


def _who(templates: Sequence[str]) -> str:
    return " or ".join(templates)


def _needs_rule(field: FieldName) -> TemplateRule:
    templates = [t.name for t in TEMPLATES if field in t.needs]
    return TemplateRule(
        f"!(self.template in {_names(templates)}) || ({_has(field)})",
        NEEDS[field].format(templates=_who(templates)),
        f".{field}",
        lambda spec: spec.template not in templates or _present(spec, field),
    )


def _refuses_rule(field: FieldName) -> TemplateRule:
    templates = [t.name for t in TEMPLATES if field in t.refuses]
    return TemplateRule(
        f"!(self.template in {_names(templates)}) || !has(self.{field})",
        REFUSES[field],
        f".{field}",
        lambda spec: spec.template not in templates or getattr(spec, SPEC_FIELDS[field][0]) is None,
    )


def _framework_rule(t: TemplateInfo) -> TemplateRule:
    allowed = t.frameworks
    return TemplateRule(
        f"self.template != {cel_string(t.name)} || !has(self.isaacLab) || self.isaacLab.framework in {_names(allowed)}",
        FRAMEWORK.format(frameworks=_who(list(allowed)), template=t.name),
        ".isaacLab.framework",
        lambda spec: spec.template != t.name or spec.isaac_lab is None or spec.isaac_lab.framework in allowed,
    )


def _gate_rule(t: TemplateInfo) -> TemplateRule:
    metrics = t.gate_metrics
    return TemplateRule(
        f"self.template != {cel_string(t.name)} || !has(self.gate) || self.gate.metric in {_names(metrics)}",
        GATE_METRIC.format(template=t.name, metrics=", ".join(metrics)),
        ".gate.metric",
        lambda spec: spec.template != t.name or spec.gate is None or spec.gate.metric in metrics,
    )


def _resume_rule() -> TemplateRule:
    allowed = {t.name: t.resumable for t in TEMPLATES if t.resumable}
    cel = " || ".join(
        f"(self.template == {cel_string(name)} && has(self.isaacLab) && self.isaacLab.framework in {_names(fw)})"
        for name, fw in allowed.items()
    )
    frameworks = sorted({f for fw in allowed.values() for f in fw})
    return TemplateRule(
        f"!has(self.resume) || {cel}",
        RESUME.format(templates=_who(list(allowed)), frameworks=_who(frameworks)),
        ".resume",
        lambda spec: (
            spec.resume is None
            or (spec.isaac_lab is not None and spec.isaac_lab.framework in allowed.get(spec.template, ()))
        ),
    )


def template_rules() -> tuple[TemplateRule, ...]:
    """Every rule the templates make over an AmlJob's spec, in a stable order."""
    needed = [f for f in FIELD_NAMES if any(f in t.needs for t in TEMPLATES)]
    refused = [f for f in FIELD_NAMES if any(f in t.refuses for t in TEMPLATES)]
    return (
        *(_needs_rule(f) for f in needed),
        *(_refuses_rule(f) for f in refused),
        *(_framework_rule(t) for t in TEMPLATES if t.frameworks),
        *(_gate_rule(t) for t in TEMPLATES if t.gate_metrics),
        _resume_rule(),
    )


TEMPLATE_RULES = template_rules()


def broken_rule(spec: Any) -> TemplateRule | None:
    """The first template rule `spec` breaks (what admission would have refused), or None."""
    return next((rule for rule in TEMPLATE_RULES if not rule.holds(spec)), None)
