"""Property tests over the spec models: whatever a user (or an attacker) writes, amlwire answers with a
validation message naming a spec field, or with a spec it can plan from. Never with a crash."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from amlwire.api.amljob import AmlJobSpec
from amlwire.api.attachedcompute import AttachedComputeSpec
from amlwire.domain.federation import credential_name, subject_of
from amlwire.domain.jobs import aml_job_name, build_command
from amlwire.handlers.status import invalid_spec
from tests.conftest import REPO

AZURE_FIC_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$")  # Entra's rule for FIC names
AML_JOB_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}$")
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8,
)
TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=300
) | st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)


def example_spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())["spec"]
    return spec


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from paths(child, (*prefix, key))


@st.composite
def mutated(draw: st.DrawFn, example: str) -> dict[str, Any]:
    """An example spec with one to three fields replaced, removed, or joined by an unknown one."""
    spec = copy.deepcopy(example_spec(example))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths(spec))))
        parent = spec
        for key in path[:-1]:
            parent = parent[key]
        leaf = path[-1]
        action = draw(st.sampled_from(["replace", "replace-text", "remove", "add"]))
        if action == "replace":
            parent[leaf] = draw(JSON)
        elif action == "replace-text":
            parent[leaf] = draw(TEXT)
        elif action == "remove":
            parent.pop(leaf)
        elif isinstance(parent[leaf], dict):
            parent[leaf][draw(st.text(min_size=1, max_size=12))] = draw(JSON)
    return spec


def check(model: type[BaseModel], raw: dict[str, Any]) -> BaseModel | None:
    """Valid → round-trips through its JSON form; invalid → every message part names a spec field."""
    try:
        parsed = model.model_validate(raw)
    except ValidationError as error:
        message = invalid_spec(error)
        assert message, raw
        for part in message.split("; "):
            assert part.startswith("spec"), part  # `spec.field.path: what is wrong`
            assert ": " in part, part
        return None
    again = model.model_validate(parsed.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert again == parsed
    return parsed


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(mutated("attachedcompute.yaml"))
def test_attached_compute_specs_validate_or_name_the_field(raw):
    spec = check(AttachedComputeSpec, raw)
    if spec is None:
        return
    for issuer in ("https://eastus.oic.prod-aks.azure.com/t/c/", "https://oidc.example/"):
        names = {credential_name(a.namespace, a.name, issuer) for a in spec.service_accounts}
        assert len(names) == len({subject_of(a.namespace, a.name) for a in spec.service_accounts})
        assert all(AZURE_FIC_NAME.match(n) for n in names), names


@PROPERTY
@pytest.mark.parametrize("example", ["amljob-train.yaml", "amljob-validate.yaml", "amljob-command.yaml"])
@given(data=st.data())
def test_aml_job_specs_validate_or_name_the_field(example, data):
    spec = check(AmlJobSpec, data.draw(mutated(example)))
    if spec is None:
        return
    assert isinstance(build_command(spec), str)


@PROPERTY
@given(name=TEXT, uid=st.uuids())
def test_aml_job_names_are_valid_and_stable_for_any_object_name(name, uid):
    first = aml_job_name(name, str(uid))
    assert AML_JOB_NAME.match(first), first
    assert first == aml_job_name(name, str(uid))
    assert str(uid).replace("-", "")[:12] in first
