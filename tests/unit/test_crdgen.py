"""The CRDs are generated from the models: committed files match, schemas are structural and described."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from amlwire.api.attachedcompute import AttachedComputeSpec
from amlwire.api.crdgen import KINDS, SchemaError, crd, model_schema, stale_files
from tests.conftest import REPO
from tests.kube.test_admission import load


def walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


def test_committed_crds_match_the_models():
    assert stale_files(REPO) == [], "run 'make crds' and commit the result"


def test_chart_carries_the_same_crds():
    for kind in KINDS:
        name = f"{kind.crd_name}.yaml"
        assert (REPO / "crds" / name).read_text() == (REPO / "charts" / "amlwire" / "crds" / name).read_text()


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schemas_are_structural(kind):
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert "$ref" not in node, path
        assert "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        if "anyOf" in node:
            assert all("type" not in option for option in node["anyOf"]), path


def test_quantities_are_int_or_string():
    spec = model_schema(AttachedComputeSpec, "spec")
    requests = spec["properties"]["compute"]["properties"]["instanceTypes"]["items"]["properties"]["resources"]
    # maxLength bounds the cost of the isQuantity() rule, which the apiserver estimates at CRD admission
    assert requests["properties"]["limits"]["additionalProperties"] == {
        "x-kubernetes-int-or-string": True,
        "maxLength": 64,
    }


def test_list_defaults_are_published_so_the_apiserver_applies_them():
    spec = model_schema(AttachedComputeSpec, "spec")
    assert spec["properties"]["serviceAccounts"]["default"] == [
        {"namespace": "azureml", "name": "default", "create": True},
        {"namespace": "azureml", "name": "training", "create": True},
    ]


def test_a_field_without_description_is_refused():
    class Undocumented(BaseModel):
        name: str

    with pytest.raises(SchemaError, match=r"spec\.name"):
        model_schema(Undocumented, "spec")


def test_the_operator_parses_with_the_same_rule_and_message_as_admission():
    spec = load("attachedcompute.yaml")["spec"]
    spec["identity"]["resourceId"] = "not-an-id"
    with pytest.raises(ValidationError) as caught:
        AttachedComputeSpec.model_validate(spec)
    (error,) = caught.value.errors()
    assert error["loc"] == ("identity", "resourceId")
    cel_messages = [
        r["message"]
        for r in model_schema(AttachedComputeSpec, "spec")["properties"]["identity"]["properties"]["resourceId"][
            "x-kubernetes-validations"
        ]
    ]
    assert error["msg"].removeprefix("Value error, ") in cel_messages
