"""The integration harness: real apiserver + Azure sandbox + amlwire in-process, authenticated by workload identity."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from amlwire.adapters.kube.adapter import INSTANCE_TYPES
from amlwire.api.reasons import REASONS
from amlwire.reconcile.attachedcompute import OWNER_LABEL
from amlwire_devenv.chaos import condition
from amlwire_devenv.cluster import as_object, items_of
from amlwire_devenv.controlplane import ControlPlane
from amlwire_devenv.stack import FIC_TYPE, LocalStack
from amlwire_sandbox.world import World
from tests.conftest import GROUP, REPO, VERSION, demo_world

SUB = "6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
RG = f"/subscriptions/{SUB}/resourceGroups"
CLUSTER_ID = f"{RG}/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks-robotics"
EXTENSION_ID = f"{CLUSTER_ID}/providers/Microsoft.KubernetesConfiguration/extensions/azureml"
IDENTITY_ID = f"{RG}/rg-id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-ml"
IDENTITY_CLIENT_ID = "3c5b0f0e-1d6e-4a7b-9c2d-5e6f7a8b9c01"
IDENTITY_PRINCIPAL = "8e2d4c6a-0b1f-4e3d-a5c7-9b8a7f6e5d02"
_EXAMPLE = yaml.safe_load((REPO / "examples" / "attachedcompute.yaml").read_text())["spec"]
EXAMPLE_SUBJECTS = {f"system:serviceaccount:{a['namespace']}:{a['name']}" for a in _EXAMPLE["serviceAccounts"]}
EXAMPLE_GRANTS = len(_EXAMPLE["access"]["grants"])  # role assignments amlwire makes for the example
STORAGE_ID = f"{RG}/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlrobotics"
WORKSPACE_ID = f"{RG}/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw-robotics"
__all__ = ["FIC_TYPE"]


def test_world() -> World:
    """The demo world, fast: no LRO or propagation delays unless a test asks for them."""
    return demo_world(lro=0.1, queued=0.2, running=0.5)


def harness_over(world: World, plane: ControlPlane, kube: client.ApiClient, tmp: Path) -> Iterator[Harness]:
    """A fixture's harness over its own world, closed after the test."""
    h = Harness(plane, kube, tmp, world)
    try:
        yield h
    finally:
        h.close()


def compute_manifest(name: str, **spec_changes: Any) -> dict[str, Any]:
    manifest = yaml.safe_load((REPO / "examples" / "attachedcompute.yaml").read_text())
    manifest["metadata"]["name"] = name
    for dotted, value in spec_changes.items():
        node = manifest["spec"]
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return manifest


class Harness(LocalStack):
    """One test's world: a fresh sandbox and (once started) an operator on the shared apiserver."""

    def __init__(
        self,
        plane: ControlPlane,
        kube: client.ApiClient,
        tmp: Path,
        world: World | None = None,
        joins: Harness | None = None,
    ) -> None:
        super().__init__(plane, joins.world if joins else world or test_world(), tmp, kube, joins=joins)
        self.created: list[tuple[str, str | None, str]] = []
        self.custom = client.CustomObjectsApi(self.kube)
        self.core = client.CoreV1Api(self.kube)
        # the apiserver is shared by the session: start from none of the amlwire objects other tests left
        self.adopt_everything()
        self._forget_objects()
        self.created.clear()

    def start(self, **overrides: Any) -> Any:
        return self.start_operator(**overrides)

    def stop(self) -> None:
        self.stop_operator()

    def restart(self, **overrides: Any) -> None:
        self.stop()
        self.start(**overrides)

    def close(self) -> None:
        self.stop_operator()
        undeclared = self.undeclared_reasons()
        self._forget_objects()
        self.sandbox.stop()
        if undeclared:
            pytest.fail(f"reasons emitted but not declared in amlwire.api.reasons: {sorted(undeclared)}")

    def undeclared_reasons(self) -> set[str]:
        """Every reason amlwire put on a condition or an event in this test is in the one vocabulary."""
        seen = {
            e.reason
            for e in self.core.list_event_for_all_namespaces().items
            if e.source and e.source.component == "amlwire" and e.reason
        }
        for kind, namespace, name in self.created:
            try:
                obj = as_object(
                    self.custom.get_cluster_custom_object(GROUP, VERSION, kind, name)
                    if namespace is None
                    else self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, kind, name)
                )
            except client.ApiException:
                continue
            seen |= {c["reason"] for c in (obj.get("status") or {}).get("conditions", [])}
        return seen - set(REASONS)

    def _forget_objects(self) -> None:
        """Remove what the test created from the shared apiserver, finalizers and all."""
        for kind, namespace, name in self.created:
            try:
                if namespace is None:
                    self.custom.patch_cluster_custom_object(
                        GROUP, VERSION, kind, name, {"metadata": {"finalizers": []}}
                    )
                    self.custom.delete_cluster_custom_object(GROUP, VERSION, kind, name)
                else:
                    self.custom.patch_namespaced_custom_object(
                        GROUP, VERSION, namespace, kind, name, {"metadata": {"finalizers": []}}
                    )
                    self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, kind, name)
            except client.ApiException as error:
                if error.status != 404:
                    raise
        for account in self.core.list_namespaced_service_account("azureml").items:
            if account.metadata is not None and account.metadata.name:
                self.core.delete_namespaced_service_account(account.metadata.name, "azureml")
        group, version, plural = INSTANCE_TYPES  # what the operator would have removed had it run the finalizer
        owned = self.custom.list_cluster_custom_object(group, version, plural, label_selector=OWNER_LABEL)
        for item in items_of(owned):
            self.custom.delete_cluster_custom_object(group, version, plural, item["metadata"]["name"])

    def adopt_everything(self) -> None:
        """Clean up, at close, the amlwire objects made behind the harness's back (by a campaign, say)."""
        for item in items_of(self.custom.list_cluster_custom_object(GROUP, VERSION, "attachedcomputes")):
            self.created.append(("attachedcomputes", None, item["metadata"]["name"]))
        for item in items_of(self.custom.list_cluster_custom_object(GROUP, VERSION, "amljobs")):
            self.created.append(("amljobs", item["metadata"]["namespace"], item["metadata"]["name"]))

    # -- AttachedComputes -------------------------------------------------------------------------
    def apply_compute(self, name: str | None = None, **spec_changes: Any) -> str:
        name = name or f"c-{uuid.uuid4().hex[:8]}"
        self.custom.create_cluster_custom_object(
            GROUP, VERSION, "attachedcomputes", compute_manifest(name, **spec_changes)
        )
        self.created.append(("attachedcomputes", None, name))
        return name

    def compute(self, name: str) -> dict[str, Any]:
        return as_object(self.custom.get_cluster_custom_object(GROUP, VERSION, "attachedcomputes", name))

    def exists(self, name: str) -> bool:
        """Whether the AttachedCompute is still there (its finalizer not yet released)."""
        try:
            self.compute(name)
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def patch_compute(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object(GROUP, VERSION, "attachedcomputes", name, {"spec": spec})

    def request_reconcile(self, name: str, at: str = "2026-12-03T00:00:00Z") -> str:
        """What `kubectl annotate amlc NAME amlwire.io/reconcile-requested-at=...` does: a pass now."""
        annotation = {"metadata": {"annotations": {"amlwire.io/reconcile-requested-at": at}}}
        self.custom.patch_cluster_custom_object(GROUP, VERSION, "attachedcomputes", name, annotation)
        return at

    def delete_compute(self, name: str) -> None:
        self.custom.delete_cluster_custom_object(GROUP, VERSION, "attachedcomputes", name)

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        return condition(self.compute(name), type_)

    def wait_condition(
        self,
        name: str,
        type_: str,
        status: str = "True",
        reason: str | None = None,
        timeout: float = 30.0,
        get: Callable[[str], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        get = get or self.compute
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            obj = get(name)
            seen = condition(obj, type_)
            if seen and seen["status"] == status and (reason is None or seen["reason"] == reason):
                return obj
            time.sleep(0.1)
        conditions = (get(name).get("status") or {}).get("conditions", [])
        summary = "\n".join(f"  {c['type']}={c['status']} {c['reason']}: {c['message']}" for c in conditions)
        pytest.fail(f"{name}: {type_} never became {status}/{reason or '*'} in {timeout}s; last {seen}\n{summary}")

    def refusal(self, name: str, type_: str, reason: str) -> str:
        """The message of the compute's condition once it is False with `reason`."""
        found = condition(self.wait_condition(name, type_, "False", reason), type_)
        assert found is not None
        return str(found["message"])

    def register_model_version(self, name: str, version: str, like: str = "2") -> None:
        """Someone registers a model version (a copy of version `like`), behind amlwire's back."""
        registered = self.ctl.require(f"{WORKSPACE_ID}/models/{name}/versions/{like}")
        self.ctl.create(
            f"{WORKSPACE_ID}/models/{name}/versions/{version}",
            "Microsoft.MachineLearningServices/workspaces/models/versions",
            {"properties": registered["properties"]},
        )

    def wait_ready(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_condition(name, "Ready", "True", timeout=timeout)

    def wait_reconciled(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        """Ready for the current generation (after a spec change), not an earlier one."""
        generation = self.compute(name)["metadata"]["generation"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = self.compute(name)
            ready = condition(obj, "Ready")
            if ready and ready["status"] == "True" and ready.get("observedGeneration") == generation:
                return obj
            time.sleep(0.1)
        return self.wait_condition(name, "Ready", "True", timeout=0.1)

    def events(self, name: str, uid: str | None = None) -> list[client.CoreV1Event]:
        """Events about `name` (only this incarnation of it with `uid`: the apiserver is shared by the session)."""
        return [
            e
            for e in self.core.list_event_for_all_namespaces().items
            if e.involved_object.name == name and uid in (None, e.involved_object.uid)
        ]

    # -- AmlJobs ------------------------------------------------------------------------------------
    def apply_job(
        self,
        example: str = "amljob-validate.yaml",
        name: str | None = None,
        namespace: str = "robotics",
        **spec_changes: Any,
    ) -> str:
        manifest = yaml.safe_load((REPO / "examples" / example).read_text())
        manifest["metadata"]["name"] = name or f"j-{uuid.uuid4().hex[:8]}"
        manifest["metadata"]["namespace"] = namespace
        for key, value in spec_changes.items():
            if value is None:
                manifest["spec"].pop(key, None)
            else:
                manifest["spec"][key] = value
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "amljobs", manifest)
        self.created.append(("amljobs", namespace, manifest["metadata"]["name"]))
        return str(manifest["metadata"]["name"])

    def job(self, name: str, namespace: str = "robotics") -> dict[str, Any]:
        return as_object(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "amljobs", name))

    def wait_job(
        self,
        name: str,
        type_: str = "Ready",
        status: str = "True",
        reason: str | None = None,
        timeout: float = 30.0,
        namespace: str = "robotics",
    ) -> dict[str, Any]:
        return self.wait_condition(name, type_, status, reason, timeout, get=lambda n: self.job(n, namespace))

    def delete_job(self, name: str, namespace: str = "robotics") -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "amljobs", name)

    def wired(self, **operator_settings: Any) -> str:
        """Start the operator and wire the example AttachedCompute (robotics-gpu) to Ready."""
        self.start(**operator_settings)
        name = self.apply_compute("robotics-gpu")
        self.wait_ready(name)
        return name

    def aml_jobs(self) -> list[dict[str, Any]]:
        return self.ctl.jobs()

    # -- the sandbox's view ---------------------------------------------------------------------
    def fics(self) -> dict[str, dict[str, Any]]:
        prefix = IDENTITY_ID + "/federatedIdentityCredentials/"
        return {k.rsplit("/", 1)[-1]: v["properties"] for k, v in self.ctl.resources_under(prefix).items()}

    def extension_settings(self) -> dict[str, str]:
        return (self.ctl.resource(EXTENSION_ID) or {}).get("properties", {}).get("configurationSettings", {})

    def sandbox_compute(self, name: str = "k8s-gpu") -> dict[str, Any] | None:
        return self.ctl.resource(f"{WORKSPACE_ID}/computes/{name}")

    def role_assignments(self, principal: str = IDENTITY_PRINCIPAL) -> list[dict[str, Any]]:
        state = self.ctl.state()["resources"]
        return [v for k, v in state.items() if "/roleAssignments/" in k and v["properties"]["principalId"] == principal]

    def service_account(self, name: str, namespace: str = "azureml") -> client.V1ServiceAccount | None:
        try:
            return self.core.read_namespaced_service_account(name, namespace)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
