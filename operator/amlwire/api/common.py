"""Shared building blocks of the CRD models: camelCase fields, CEL rules, conditions."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

GROUP = "amlwire.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

UUID_RE = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
DNS1123_LABEL_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
RESOURCE_GROUP_RE = r"^[-\w.()]{0,89}[-\w()]$"


def rule(expression: str, message: str, **extra: str) -> dict[str, str]:
    """One CEL `x-kubernetes-validations` entry; `message` must name the field and the fix."""
    return {"rule": expression, "message": message, **extra}


def cel(*rules: dict[str, str]) -> Callable[[dict[str, Any]], None]:
    """json_schema_extra adding CEL rules to a model or field, after any rules already there."""

    def add_rules(schema: dict[str, Any]) -> None:
        schema.setdefault("x-kubernetes-validations", []).extend(rules)

    return add_rules


def cel_string(text: str) -> str:
    """`text` as a single-quoted CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Matches:
    """A string field that must match `regex` (RE2 and Python `re` alike).

    Enforced twice from one definition: by the apiserver as a CEL rule at admission, and by the
    operator when it parses a spec; both answer with `message`, which names the field and the fix.
    """

    regex: str
    message: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault("x-kubernetes-validations", []).append(
            rule(f"self.matches({cel_string(self.regex)})", self.message)
        )
        return json_schema

    def check(self, value: Any) -> Any:
        if isinstance(value, str) and not re.search(self.regex, value):
            raise ValueError(self.message)
        return value


class CRDModel(BaseModel):
    """Base of every spec/status model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it is written to Kubernetes (camelCase, no unset optionals)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(CRDModel):
    """A metav1.Condition: the state of one aspect of the resource, explained for humans."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    type: str = Field(max_length=316, description="Type of condition in CamelCase, e.g. Ready, FederationReady.")
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Programmatic identifier of the condition's last transition, in CamelCase.",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="What the condition means right now and, when False, what to do about it.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition was set from."
    )
    last_transition_time: str = Field(
        description="When the condition last changed status (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class ObjectStatus(CRDModel):
    """Fields every amlwire status carries."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Conditions in kstatus form: Ready, Reconciling, Stalled, and one per step.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    kopf: dict[str, Any] | None = Field(
        default=None,
        description="Handler progress kept by the operator framework.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class CRDRoot(CRDModel):
    """A whole custom resource: apiVersion, kind, metadata, spec and status (metadata is the apiserver's)."""

    model_config = CRDModel.model_config | {"extra": "ignore"}

    api_version: Literal["amlwire.io/v1alpha1"] = Field(default="amlwire.io/v1alpha1", alias="apiVersion")
    metadata: dict[str, Any] = Field(default_factory=dict)
