"""How fast and how frugally amlwire wires a cluster, against a careful script over the raw SDKs.

Prints: time to Ready for 1 and for 10 AttachedComputes sharing one identity; ARM calls by route for one
AttachedCompute against the minimal sequence (a sequential raw-SDK script, run in the same bench); ARM writes
during a resync when nothing drifted. Run: make bench, or .venv/bin/python bench/wiring.py
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.entities import IdentityConfiguration, KubernetesCompute, ManagedIdentityConfiguration
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.kubernetesconfiguration.extensions import KubernetesConfigurationExtensionsMgmtClient
from azure.mgmt.kubernetesconfiguration.extensions import models as ext_models
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import FederatedIdentityCredential
from azure.mgmt.storage import StorageManagementClient
from kubernetes import client
from rich.console import Console
from rich.table import Table

from amlwire.domain.access import assignment_name, role_definition_id
from amlwire_devenv.chaos import example
from bench.common import GROUP, VERSION, delete_everything, is_ready, stack, start_plane, wait

ARM_ROUTES_EXCLUDED = ("entra.", "control.")


def arm_calls(calls: list[dict[str, Any]]) -> Counter[str]:
    return Counter(f"{c['method']} {c['route']}" for c in calls if not c["route"].startswith(ARM_ROUTES_EXCLUDED))


def raw_sdk_wiring(local: Any, spec: dict[str, Any]) -> float:
    """What a careful admin script does, once, in order: the minimal sequence of ARM calls."""
    started = time.monotonic()
    kw = {
        "base_url": local.sandbox.base_url,
        "credential_scopes": [local.sandbox.base_url + "/.default"],
        "connection_verify": str(local.sandbox.ca_file),
        "retry_total": 0,
    }
    cred, sub = local.credential(), spec["workspace"]["subscriptionId"]
    cluster = ContainerServiceClient(cred, sub, **kw).managed_clusters.get(
        spec["cluster"]["resourceGroup"], spec["cluster"]["name"]
    )
    identity_id = spec["identity"]["resourceId"]
    group, name = identity_id.split("/")[4], identity_id.split("/")[-1]
    msi = ManagedServiceIdentityClient(cred, sub, **kw)
    identity = msi.user_assigned_identities.get(group, name)
    list(msi.federated_identity_credentials.list(group, name))
    for account in spec["serviceAccounts"]:
        msi.federated_identity_credentials.create_or_update(
            group,
            name,
            f"fic-{account['name']}",
            FederatedIdentityCredential(
                issuer=cluster.oidc_issuer_profile.issuer_url,
                audiences=["api://AzureADTokenExchange"],
                subject=f"system:serviceaccount:{account['namespace']}:{account['name']}",
            ),
        )
    extensions = KubernetesConfigurationExtensionsMgmtClient(cred, sub, **kw).extensions
    cluster_args = (
        spec["cluster"]["resourceGroup"],
        "Microsoft.ContainerService",
        "managedClusters",
        spec["cluster"]["name"],
        "azureml",
    )
    extensions.get(*cluster_args)
    extensions.begin_update(
        *cluster_args,
        ext_models.PatchExtension(
            properties=ext_models.PatchExtensionProperties(
                configuration_settings={"identityType": "UserAssigned", "userAssignedIdentityResourceId": identity_id}
            )
        ),
    ).result()
    authz = AuthorizationManagementClient(cred, sub, **kw)
    for grant in spec["access"]["grants"]:
        list(authz.role_assignments.list_for_scope(grant["scope"], filter=f"assignedTo('{identity.principal_id}')"))
        authz.role_assignments.create(
            grant["scope"],
            assignment_name(grant["scope"], grant["role"], "x"),
            RoleAssignmentCreateParameters(  # type: ignore[call-arg]  # flattened properties
                role_definition_id=role_definition_id(sub, grant["role"]),
                principal_id=identity.principal_id,
                principal_type="ServicePrincipal",
            ),
        )
    ml = MLClient(
        cred,
        sub,
        spec["workspace"]["resourceGroup"],
        spec["workspace"]["name"],
        cloud="BenchSandbox",
        cloud_metadata={
            "azure_portal": "https://portal.azure.com/",
            "resource_manager": local.sandbox.base_url + "/",
            "active_directory": local.sandbox.base_url + "/",
            "aml_resource_id": local.sandbox.base_url + "/",
            "storage_endpoint": "x",
            "registry_discovery_endpoint": local.sandbox.base_url + "/",
        },
        connection_verify=str(local.sandbox.ca_file),
        enable_telemetry=False,
    )
    # shared keys off under a key-based default datastore (F17) fails every job whatever the roles: check it
    workspace = ml.workspaces.get(spec["workspace"]["name"])
    account = workspace.storage_account.split("/")
    StorageManagementClient(cred, sub, **kw).storage_accounts.get_properties(account[4], account[-1])
    ml.compute.begin_create_or_update(
        KubernetesCompute(
            name=spec["compute"]["name"],
            resource_id=cluster.id,
            namespace=spec["compute"]["namespace"],
            identity=IdentityConfiguration(
                type="user_assigned", user_assigned_identities=[ManagedIdentityConfiguration(resource_id=identity_id)]
            ),
        )
    ).result()
    return time.monotonic() - started


def main() -> None:
    console = Console()
    plane, kube = start_plane()
    custom = client.CustomObjectsApi(kube)
    manifest = example("attachedcompute.yaml")
    results: dict[str, Any] = {}
    try:
        baseline = stack(plane, kube)
        mark = baseline.ctl.mark()
        results["baseline_seconds"] = raw_sdk_wiring(baseline, manifest["spec"])
        results["baseline_calls"] = arm_calls(baseline.ctl.calls(since=mark))
        baseline.close()

        local = stack(plane, kube)
        local.start_operator()
        mark = local.ctl.mark()
        custom.create_cluster_custom_object(GROUP, VERSION, "attachedcomputes", manifest)
        results["one_seconds"] = wait(lambda: is_ready(custom, "robotics-gpu"), 60)
        results["one_calls"] = arm_calls(local.ctl.calls(since=mark))
        time.sleep(0.5)
        mark = local.ctl.mark()
        local.stop_operator()
        local.start_operator()  # resume: a full reconcile of an unchanged world
        wait(lambda: len(arm_calls(local.ctl.calls(since=mark))) >= sum(results["one_calls"].values()) // 3, 30)
        time.sleep(1.0)
        resync = arm_calls(local.ctl.calls(since=mark))
        results["resync_reads"] = sum(v for k, v in resync.items() if k.startswith("GET "))
        results["resync_writes"] = sum(v for k, v in resync.items() if not k.startswith("GET "))
        delete_everything(custom)
        local.close()

        shared = stack(plane, kube)
        shared.ctl.timing(ficWriteWindowSeconds=0.05)
        shared.start_operator()
        names = []
        started = time.monotonic()
        for index in range(10):
            cluster = shared.add_cluster(f"aks-{index}")
            item = example("attachedcompute.yaml")
            item["metadata"]["name"] = f"shared-{index}"
            item["spec"]["cluster"]["name"] = cluster
            item["spec"]["compute"]["name"] = f"gpu-{index}"
            # an identity holds 20 FICs: 10 clusters x the extension's 2 accounts (the job account would make 30)
            item["spec"]["serviceAccounts"] = [
                a for a in item["spec"]["serviceAccounts"] if a["namespace"] == "azureml"
            ]
            custom.create_cluster_custom_object(GROUP, VERSION, "attachedcomputes", item)
            names.append(item["metadata"]["name"])
        wait(lambda: all(is_ready(custom, n) for n in names), 120, interval=0.1)
        results["ten_seconds"] = time.monotonic() - started
        results["ten_409s"] = sum(1 for c in shared.ctl.calls() if c["status"] == 409)
        delete_everything(custom)
        shared.close()
    finally:
        plane.stop()
    report(console, results)


def report(console: Console, r: dict[str, Any]) -> None:
    table = Table(title="amlwire wiring against the sandbox (LRO and propagation delays 0)")
    table.add_column("measure")
    table.add_column("amlwire", justify="right")
    table.add_column("raw SDK script", justify="right")
    table.add_column("ratio", justify="right")
    one_total, base_total = sum(r["one_calls"].values()), sum(r["baseline_calls"].values())
    table.add_row(
        "time to Ready, 1 AttachedCompute (s)",
        f"{r['one_seconds']:.2f}",
        f"{r['baseline_seconds']:.2f}",
        f"{r['one_seconds'] / r['baseline_seconds']:.2f}x",
    )
    table.add_row("time to Ready, 10 sharing one identity (s)", f"{r['ten_seconds']:.2f}", "", "")
    table.add_row("ARM calls, 1 AttachedCompute", str(one_total), str(base_total), f"{one_total / base_total:.2f}x")
    table.add_row("ARM 409s seen, 10 sharing one identity", str(r["ten_409s"]), "", "")
    table.add_row("ARM reads in a resync, nothing drifted", str(r["resync_reads"]), "", "")
    table.add_row("ARM writes in a resync, nothing drifted", str(r["resync_writes"]), "", "")
    console.print(table)
    routes = Table(title="ARM calls by route, 1 AttachedCompute")
    routes.add_column("route")
    routes.add_column("amlwire", justify="right")
    routes.add_column("raw SDK script", justify="right")
    for route in sorted(set(r["one_calls"]) | set(r["baseline_calls"])):
        routes.add_row(route, str(r["one_calls"].get(route, 0)), str(r["baseline_calls"].get(route, 0)))
    console.print(routes)


if __name__ == "__main__":
    main()
