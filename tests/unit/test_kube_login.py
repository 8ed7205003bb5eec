"""kopf's login gets the bare token whichever way the Kubernetes client stored it."""

from __future__ import annotations

import pytest
from kubernetes import client

from amlwire.adapters.kube.client import bearer_token


@pytest.mark.parametrize(
    ("key", "stored", "token"),
    [
        ("BearerToken", "bearer eyJ.in-cluster", "eyJ.in-cluster"),  # load_incluster_config's own spelling
        ("authorization", "Bearer eyJ.kubeconfig", "eyJ.kubeconfig"),  # load_kube_config's
        ("authorization", "eyJ.bare", "eyJ.bare"),
        ("authorization", "", None),
    ],
)
def test_the_token_kopf_sends_has_no_scheme_left_in_it(key, stored, token):
    configuration = client.Configuration()
    configuration.api_key = {key: stored}
    assert bearer_token(configuration) == token
