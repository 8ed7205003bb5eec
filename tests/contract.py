"""Is a JSON body what the pinned SDK's generated model says the service answers?

Two generations of generated code are in use: msrest models (`_attribute_map`, `_validation`,
`_subtype_map`: azure-mgmt-msi, -authorization, azure-ai-ml's run history) and TypeSpec models (`rest_field`,
type hints, `__mapping__` for discriminators: azure-mgmt-containerservice, -storage,
-kubernetesconfiguration-extensions, azure-ai-ml's ARM client). Each violation names the path and the property.
"""

from __future__ import annotations

import datetime
import enum
import importlib
import re
import sys
import types
import typing
from functools import cache
from typing import Any

ANY = object()  # a node that takes whatever it is given

# What each sandbox route answers, as (SDK models module, class); "[X]" is a page of X ({value, nextLink}).
ML = "azure.ai.ml._restclient.arm_ml_service.models"
RESPONSE_MODELS: dict[str, tuple[str, str]] = {
    "msi.identity": ("azure.mgmt.msi.models", "Identity"),
    "msi.fic": ("azure.mgmt.msi.models", "FederatedIdentityCredential"),
    "msi.fic.list": ("azure.mgmt.msi.models", "FederatedIdentityCredentialsListResult"),
    "aks.cluster": ("azure.mgmt.containerservice.models", "ManagedCluster"),
    "ext.extension": ("azure.mgmt.kubernetesconfiguration.extensions.models", "Extension"),
    "authz.roleAssignment": ("azure.mgmt.authorization.v2022_04_01.models", "RoleAssignment"),
    "authz.roleAssignment.list": ("azure.mgmt.authorization.v2022_04_01.models", "RoleAssignmentListResult"),
    "storage.account": ("azure.mgmt.storage.models", "StorageAccount"),
    "ml.workspace": (ML, "Workspace"),
    "ml.compute": (ML, "ComputeResource"),
    "ml.compute.list": (ML, "[ComputeResource]"),
    "ml.job": (ML, "JobBase"),
    "ml.job.list": (ML, "[JobBase]"),
    "ml.environment.version": (ML, "EnvironmentVersion"),
    "ml.model": (ML, "ModelContainer"),
    "ml.model.version": (ML, "ModelVersion"),
    "ml.model.version.list": (ML, "[ModelVersion]"),
    "ml.datastore": (ML, "Datastore"),
    "ml.datastore.list": (ML, "[Datastore]"),
    "ml.datastore.secrets": (ML, "DatastoreSecrets"),
    "authz.roleDefinition": ("azure.mgmt.authorization.v2022_04_01.models", "RoleDefinition"),
    "history.run.details": ("azure.ai.ml._restclient.runhistory.models", "RunDetails"),
}
ERROR_FIELDS = {"code", "message", "target", "details", "additionalInfo", "innerError"}
# ARM's common-types OperationStatusResult (v5): what an Azure-AsyncOperation URL answers, for every provider
OPERATION_STATUS_FIELDS = {
    "id",
    "resourceId",
    "name",
    "status",
    "percentComplete",
    "startTime",
    "endTime",
    "operations",
    "error",
    "properties",
}
# Fields Azure always sends that the models mark optional: a sandbox body without them is not Azure's
ALWAYS_SENT: dict[str, tuple[str, ...]] = {
    "ext.extension": ("properties.errorInfo", "properties.statuses", "properties.provisioningState"),
    "arm.operation": ("status", "startTime"),
}


def model_of(route: str) -> tuple[type, bool] | None:
    """The SDK class a body of `route` must fit, and whether it is a page of them."""
    module, name = RESPONSE_MODELS.get(route, ("", ""))
    if not module:
        return None
    paged = name.startswith("[")
    return getattr(importlib.import_module(module), name.strip("[]")), paged


def violations(route: str, status: int, body: Any) -> list[str]:
    if status >= 400:
        return _error_violations(route, body)
    missing = [f"{route}: Azure always sends {path}" for path in ALWAYS_SENT.get(route, ()) if not _has(body, path)]
    if route == "arm.operation":
        return missing + _operation_violations(body)
    found = model_of(route)
    if found is None:
        return missing
    model, paged = found
    if paged:
        if not isinstance(body, dict) or set(body) - {"value", "nextLink"}:
            return [
                f"{route}: a page has only value and nextLink, got {sorted(body) if isinstance(body, dict) else body!r}"
            ]
        return [v for i, item in enumerate(body.get("value") or []) for v in check(model, item, f"{route}: value[{i}]")]
    return missing + check(model, body, route)


def check(model: type, body: Any, path: str) -> list[str]:
    if hasattr(model, "_attribute_map"):
        return _check_node(_msrest_tree(model, body), body, path)
    return _check_typespec(model, body, path)


# -- msrest ---------------------------------------------------------------------------------------------
_DOT = re.compile(r"(?<!\\)\.")
_SCALARS = {"str", "int", "long", "float", "bool", "iso-8601", "rfc-1123", "duration", "date", "unix-time", "base64"}


def _msrest_class(model: type, name: str) -> type | None:
    package = importlib.import_module(model.__module__.rsplit(".", 1)[0])
    return getattr(package, name, None)


def _msrest_tree(model: type, body: Any) -> Any:
    """The REST shape of an msrest model: nested dicts of {rest name: (type string, required)}."""
    subtypes = getattr(model, "_subtype_map", None) or {}
    for attribute, choices in subtypes.items():
        rest_key = model._attribute_map[attribute]["key"]  # type: ignore[attr-defined]
        value = body.get(rest_key) if isinstance(body, dict) else None
        if value in choices and (sub := _msrest_class(model, choices[value])) is not None and sub is not model:
            return _msrest_tree(sub, body)
    tree: dict[str, Any] = {}
    validation = getattr(model, "_validation", {}) or {}
    for attribute, spec in model._attribute_map.items():  # type: ignore[attr-defined]
        if spec["key"] == "":
            tree[""] = ANY  # additional properties
            continue
        *parents, leaf = [part.replace("\\.", ".") for part in _DOT.split(spec["key"])]
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = (model, spec["type"], bool(validation.get(attribute, {}).get("required")))
    return tree


def _check_node(tree: Any, body: Any, path: str) -> list[str]:
    if tree is ANY:
        return []
    if not isinstance(body, dict):
        return [f"{path}: expected an object, got {type(body).__name__}"]
    found = []
    for key, value in body.items():
        if key not in tree:
            if "" not in tree:
                found.append(f"{path}: property '{key}' is not in the model")
            continue
        expected = tree[key]
        if isinstance(expected, dict):
            found += _check_node(expected, value, f"{path}.{key}")
        elif value is not None:
            found += _check_msrest_value(expected[0], expected[1], value, f"{path}.{key}")
    for key, expected in tree.items():
        if isinstance(expected, tuple) and expected[2] and key not in body:
            found.append(f"{path}: required property '{key}' is missing")
    return found


def _check_msrest_value(model: type, type_: str, value: Any, path: str) -> list[str]:
    if type_.startswith("[") and type_.endswith("]"):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [
            v for i, item in enumerate(value) for v in _check_msrest_value(model, type_[1:-1], item, f"{path}[{i}]")
        ]
    if type_.startswith("{") and type_.endswith("}"):
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        return [v for k, item in value.items() for v in _check_msrest_value(model, type_[1:-1], item, f"{path}.{k}")]
    if type_ in _SCALARS or type_ == "object":
        return []
    nested = _msrest_class(model, type_)
    return check(nested, value, path) if nested is not None else []


# -- TypeSpec -------------------------------------------------------------------------------------------
@cache
def _fields(model: type) -> dict[str, tuple[str, Any]]:
    """{rest name: (attribute, type hint)} of a TypeSpec model, inherited fields included."""
    package = importlib.import_module(model.__module__.rsplit(".", 1)[0])
    hints = typing.get_type_hints(model, vars(sys.modules[model.__module__]), {"_models": package})
    fields = {}
    for klass in reversed(model.__mro__):
        for attribute, value in vars(klass).items():
            if not attribute.startswith("_") and hasattr(value, "_rest_name_input"):
                fields[value._rest_name_input or attribute] = (attribute, hints.get(attribute, Any))
    return fields


def _concrete(model: type, body: Any) -> type:
    mapping = getattr(model, "__mapping__", None)
    if not mapping or not isinstance(body, dict):
        return model
    for value in vars(model).values():
        if getattr(value, "_is_discriminator", False):
            sub = mapping.get(body.get(value._rest_name_input))
            return _concrete(sub, body) if sub is not None and sub is not model else model
    for base in model.__mro__[1:]:  # the discriminator may be declared on a base
        for value in vars(base).values():
            if getattr(value, "_is_discriminator", False):
                sub = mapping.get(body.get(value._rest_name_input))
                return sub if sub is not None else model
    return model


def _check_typespec(model: type, body: Any, path: str) -> list[str]:
    if not isinstance(body, dict):
        return [f"{path}: expected an object, got {type(body).__name__}"]
    model = _concrete(model, body)
    fields = _fields(model)
    found = []
    for key, value in body.items():
        if key not in fields:
            found.append(f"{path}: property '{key}' is not in {model.__name__}")
        elif value is not None:
            found += _check_hint(fields[key][1], value, f"{path}.{key}")
    for key, (_, hint) in fields.items():
        if key not in body and not _optional(hint):
            found.append(f"{path}: required property '{key}' of {model.__name__} is missing")
    return found


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint) or hint is Any


def _check_hint(hint: Any, value: Any, path: str) -> list[str]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return []
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        enums = [a for a in options if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):
            allowed = {str(m.value).lower() for e in enums for m in e}
            return [] if value.lower() in allowed else [f"{path}: '{value}' is not a value of {enums[0].__name__}"]
        results = [_check_hint(option, value, path) for option in options]
        return [] if any(not r for r in results) else results[0]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [v for i, item in enumerate(value) for v in _check_hint(args[0], item, f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        return [v for k, item in value.items() for v in _check_hint(args[1], item, f"{path}.{k}")]
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: '{value}' is not one of {args}"]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = {str(m.value).lower() for m in hint}
        return [] if str(value).lower() in allowed else [f"{path}: '{value}' is not a value of {hint.__name__}"]
    if (isinstance(hint, type) and hasattr(hint, "_attr_to_rest_field")) or _is_typespec_model(hint):
        return _check_typespec(hint, value, path)
    if hint in (str, datetime.datetime, datetime.date, datetime.timedelta, bytes):
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {value!r}"]
    if hint is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r}"]
    if hint in (int, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number, got {value!r}"]
    return []


def _is_typespec_model(hint: Any) -> bool:
    return isinstance(hint, type) and any(
        k == "Model" and "model_base" in b.__module__ for b in hint.__mro__ for k in [b.__name__]
    )


def _error_violations(route: str, body: Any) -> list[str]:
    """ARM's error shape (ARM RPC, error response content): {"error": {"code", "message", ...}}."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(body) != {"error"}:
        return [f"{route}: an error body is {{'error': {{code, message}}}}, got {body!r}"[:300]]
    found = [f"{route}: error property '{k}' is not ARM's" for k in set(error) - ERROR_FIELDS]
    found += [f"{route}: error.{k} must be a string" for k in ("code", "message") if not isinstance(error.get(k), str)]
    return found


def _has(body: Any, path: str) -> bool:
    node = body
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _operation_violations(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return [f"arm.operation: not an object: {body!r}"]
    found = [f"arm.operation: {k} is not in OperationStatusResult" for k in sorted(set(body) - OPERATION_STATUS_FIELDS)]
    if not isinstance(body.get("status"), str):
        found.append("arm.operation: status must be a string")
    if body.get("error") is not None:
        found += _error_violations("arm.operation", {"error": body["error"]})
    return found


def xml_violations(route: str, status: int, body: bytes) -> list[str]:
    """A blob-plane XML body against azure-storage-blob's generated models (element names only)."""
    import xml.etree.ElementTree as ElementTree

    from azure.storage.blob._generated import models

    try:
        root = ElementTree.fromstring(body)  # noqa: S314 (the sandbox's own answers, in a test process)
    except ElementTree.ParseError as error:
        return [f"{route}: not XML ({error})"]
    if status >= 400:
        if root.tag != "Error" or root.find("Code") is None or root.find("Message") is None:
            return [f"{route}: an error is <Error><Code/><Message/></Error>, got <{root.tag}>"]
        return []
    listing = models.ListBlobsHierarchySegmentResponse if root.find("Delimiter") is not None else None
    return _xml_node(listing or models.ListBlobsFlatSegmentResponse, root, route)


def _xml_node(model: type, element: Any, path: str) -> list[str]:
    expected = (getattr(model, "_xml_map", {}) or {}).get("name")
    found = (
        [f"{path}: <{element.tag}> where {model.__name__} is <{expected}>"]
        if expected and element.tag != expected
        else []
    )
    by_tag = _xml_children(model)
    for name in element.attrib:
        if by_tag.get(name, (None, False))[1] is not True:
            found.append(f"{path}: attribute {name} is not in {model.__name__}")
    for child in element:
        if child.tag not in by_tag or by_tag[child.tag][1]:
            found.append(f"{path}: <{child.tag}> is not in {model.__name__}")
            continue
        nested, _, wrapped = by_tag[child.tag]
        if nested is None:
            continue
        for item in list(child) if wrapped else [child]:
            found += _xml_node(nested, item, f"{path}.{child.tag}")
    return found


def _xml_children(model: type) -> dict[str, tuple[type | None, bool, bool]]:
    """Element (or attribute) name -> (the model it holds, is an attribute, wraps a list of it)."""
    from azure.storage.blob._generated import models

    children: dict[str, tuple[type | None, bool, bool]] = {}
    for attribute in model._attribute_map.values():  # type: ignore[attr-defined]
        xml, type_ = attribute.get("xml") or {}, attribute["type"]
        nested = getattr(models, type_.strip("[]{}"), None)
        nested = nested if hasattr(nested, "_attribute_map") else None
        listed, wrapped = type_.startswith("["), bool(xml.get("wrapped"))
        if listed and not wrapped:
            name = xml.get("itemsName") or (getattr(nested, "_xml_map", {}) or {}).get("name") or attribute["key"]
        elif nested is not None and not listed:
            name = xml.get("name") or (getattr(nested, "_xml_map", {}) or {}).get("name") or attribute["key"]
        else:
            name = xml.get("name") or attribute["key"]
        children[name] = (nested, bool(xml.get("attr")), wrapped)
    return children
