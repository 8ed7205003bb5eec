"""The templates' rules are written once (api/templates.py) and enforced twice: by the apiserver (CEL) and by the
operator's parse (an AmlJob admitted under an older CRD). Over every combination of the fields they speak of,
both give the same answer, and the same message."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from kubernetes import client
from pydantic import ValidationError

from amlwire.api.amljob import AmlJobSpec
from amlwire.api.templates import TEMPLATE_RULES, TEMPLATES
from amlwire_devenv.cluster import ensure_namespace
from tests.conftest import GROUP, VERSION

pytestmark = pytest.mark.kube

FIELDS = ("model", "command", "isaacLab", "instanceType")


def job_spec(template: str, present: tuple[bool, ...], framework: str, gate: str | None, resume: bool) -> dict:
    values: dict[str, Any] = {
        "model": {"name": "anymal-policy", "version": "3"},
        "command": "python run.py",
        "isaacLab": {"task": "Isaac-Velocity-Rough-Anymal-C-v0", "framework": framework},
        "instanceType": "gpu-1",
    }
    spec: dict[str, Any] = {"computeRef": "robotics-gpu", "image": "nvcr.io/nvidia/isaac-lab:2.1.0"}
    spec["template"] = template
    spec |= {f: values[f] for f, there in zip(FIELDS, present, strict=True) if there}
    if gate is not None:
        spec["gate"] = {"metric": gate, "min": 0.5}
    if resume:
        spec["resume"] = {"mode": "FromLastCheckpoint", "maxAttempts": 2}
    return spec


def cases() -> list[dict]:
    combos = itertools.product(
        [t.name for t in TEMPLATES],
        itertools.product((False, True), repeat=len(FIELDS)),
        ("rsl_rl", "skrl"),
        (None, "success_rate", "train_loss"),
        (False, True),
    )
    return [job_spec(*combo) for combo in combos]


def operator_answer(spec: dict) -> str | None:
    try:
        AmlJobSpec.model_validate(spec)
    except ValidationError as error:
        return str(error.errors()[0]["msg"]).removeprefix("Value error, ")
    return None


def apiserver_answer(custom: client.CustomObjectsApi, spec: dict, i: int) -> str | None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AmlJob",
        "metadata": {"name": f"rule-{i}", "namespace": "robotics"},
        "spec": spec,
    }
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", body, dry_run="All")
    except client.ApiException as error:
        if error.status != 422:
            raise
        return str(json.loads(error.body or "{}")["message"])
    return None


def test_admission_and_the_operator_agree_on_every_template_rule(kube, custom):
    ensure_namespace(kube, "robotics")
    disagreements, refused_by = [], set()
    for i, spec in enumerate(cases()):
        ours, theirs = operator_answer(spec), apiserver_answer(custom, spec, i)
        if (ours is None) != (theirs is None) or (ours is not None and ours not in (theirs or "")):
            disagreements.append(f"{spec}: operator {ours!r}, apiserver {theirs!r}")
        refused_by.update(r.message for r in TEMPLATE_RULES if ours == r.message)
    assert disagreements == [], "\n".join(disagreements[:10])
    assert refused_by == {r.message for r in TEMPLATE_RULES}, "every rule refuses some combination"
