"""InstanceTypesReady: the AzureML extension's InstanceType objects, as spec.compute.instanceTypes says."""

from __future__ import annotations

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import InstanceTypeSpec
from amlwire.domain.conditions import StepResult, blocked, done
from amlwire.reconcile.attachedcompute.scope import EXTENSION_INSTALLED, MANAGED_BY, OWNER_LABEL, Scope
from amlwire.reconcile.runner import step


def instance_type_manifest(owner: str, item: InstanceTypeSpec) -> dict[str, object]:
    return {
        "apiVersion": "amlarc.azureml.com/v1alpha1",
        "kind": "InstanceType",
        "metadata": {"name": item.name, "labels": {**MANAGED_BY, OWNER_LABEL: owner}},
        "spec": {
            "nodeSelector": dict(item.node_selector),
            "resources": {"requests": dict(item.resources.requests), "limits": dict(item.resources.limits)},
        },
    }


@step(r.INSTANCE_TYPES_READY, needs=(EXTENSION_INSTALLED,))
def apply_instance_types(scope: Scope) -> StepResult:
    wanted = scope.spec.compute.instance_types
    if not scope.kube.instance_types_supported():
        if not wanted:
            return done(r.INSTANCE_TYPES_READY, r.NO_INSTANCE_TYPES_REQUESTED, "spec.compute.instanceTypes is empty")
        return blocked(
            r.INSTANCE_TYPES_READY,
            r.INSTANCE_TYPE_CRD_MISSING,
            "the InstanceType CRD (instancetypes.amlarc.azureml.com) is not installed on this cluster; the "
            "AzureML extension installs it: check its pods (kubectl get pods -n azureml)",
            scope.timings.blocked_recheck,
        )
    for item in wanted:
        scope.kube.apply_instance_type(instance_type_manifest(scope.name, item))
    stale = set(scope.kube.list_instance_types(f"{OWNER_LABEL}={scope.name}")) - {i.name for i in wanted}
    for name in sorted(stale):
        scope.kube.delete_instance_type(name)
    if not wanted:
        return done(r.INSTANCE_TYPES_READY, r.NO_INSTANCE_TYPES_REQUESTED, "spec.compute.instanceTypes is empty")
    return done(
        r.INSTANCE_TYPES_READY,
        r.INSTANCE_TYPES_APPLIED,
        "instance types " + ", ".join(i.name for i in wanted) + " are on the cluster",
    )
