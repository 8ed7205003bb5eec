"""Fixtures of the integration tier: a harness per test over the session's apiserver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from amlwire.devenv.stack import prepare_cluster
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
