"""Pods the sandbox runs on a world cluster's real node (the node tier): the AzureML sidecar's login and Command
jobs. Host network (nothing leaves 127.0.0.1), local images only, the cluster's apiserver by its kubeconfig."""

from __future__ import annotations

from typing import Any

from kubernetes import client, config


def core(kubeconfig: str) -> Any:
    return client.CoreV1Api(config.new_client_from_config(kubeconfig))


def node_pod(
    name: str, labels: dict[str, str], service_account: str, container: dict[str, Any], volumes: list[dict[str, Any]]
) -> dict[str, Any]:
    """A run-once pod of one container on the host network, with no API token mounted."""
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "hostNetwork": True,  # nothing leaves 127.0.0.1
            "dnsPolicy": "ClusterFirstWithHostNet",
            "serviceAccountName": service_account,
            "automountServiceAccountToken": False,
            "containers": [{"imagePullPolicy": "Never", **container}],
            "volumes": volumes,
        },
    }


def create(create_call: Any, namespace: str, body: dict[str, Any]) -> None:
    """Create, or leave what is there (the sandbox may ask again after a restart of its own)."""
    try:
        create_call(namespace, body)
    except client.ApiException as error:
        if error.status != 409:
            raise


def delete_pod(kubeconfig: str, namespace: str, name: str) -> None:
    try:
        core(kubeconfig).delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except client.ApiException as error:
        if error.status != 404:
            raise
