"""Helpers to prepare a (local) cluster: install CRDs and namespaces, wait for them."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kubernetes import client

from amlwire.api.crdgen import KINDS, crd


def amlwire_crds() -> list[dict[str, Any]]:
    return [crd(kind) for kind in KINDS]


def install_crds(api: client.ApiClient, manifests: Iterable[dict[str, Any]], timeout: float = 30.0) -> None:
    """Create or replace CRDs and wait until each is Established."""
    ext = client.ApiextensionsV1Api(api)
    names = []
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        names.append(name)
        try:
            ext.create_custom_resource_definition(manifest)
        except client.ApiException as error:
            if error.status != 409:
                raise
            current = ext.read_custom_resource_definition(name)
            manifest = {
                **manifest,
                "metadata": {**manifest["metadata"], "resourceVersion": current.metadata.resource_version},
            }
            ext.replace_custom_resource_definition(name, manifest)
    deadline = time.monotonic() + timeout
    for name in names:
        while not _established(ext, name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {timeout}s")
            time.sleep(0.1)


def _established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    conditions = ext.read_custom_resource_definition_status(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    except client.ApiException as error:
        if error.status != 409:
            raise
