"""Fixtures of the integration tier: a harness per test over the session's apiserver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from amlwire_devenv.cluster import cluster_role_binding
from amlwire_devenv.stack import prepare_cluster
from tests.e2e.harness import Harness


@pytest.fixture(scope="session")
def cluster(kube):
    """amlwire's CRDs, the AzureML extension's InstanceType CRD, and the namespaces the examples use."""
    prepare_cluster(kube)
    return kube


@pytest.fixture
def harness(control_plane, cluster, tmp_path) -> Iterator[Harness]:
    h = Harness(control_plane, cluster, tmp_path)
    try:
        yield h
    finally:
        h.close()


VIEW_ONLY = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "amlwire-doctor-test-view"},
    "rules": [
        {"apiGroups": ["", "amlwire.io", "events.k8s.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]}
    ],
}


@pytest.fixture(scope="module")
def view_only_user(cluster):
    """The doctor runs as a user that may only read: RBAC would refuse any write."""
    rbac = client.RbacAuthorizationV1Api(cluster)
    try:
        rbac.create_cluster_role(VIEW_ONLY)
        rbac.create_cluster_role_binding(
            cluster_role_binding("amlwire-doctor-test-view", "amlwire-doctor-test-view", "User", "amlwire-viewer")
        )
    except client.ApiException as error:
        if error.status != 409:
            raise
