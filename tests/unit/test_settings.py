"""Settings that decide how replicas behave together."""

from __future__ import annotations

import pytest

from amlwire.config import Settings


@pytest.mark.parametrize(
    ("pods", "configured"),
    [
        (["amlwire-7d9f8-abcde", "amlwire-7d9f8-fghij"], None),
        (["amlwire-7d9f8-abcde", "amlwire-6c4b2-abcde"], None),
    ],
)
def test_replicas_of_one_deployment_never_tie_for_peering(pods, configured):
    """kopf pauses every operator when peers share a priority: the chart's replicas must differ."""
    priorities = {Settings(pod_name=pod, priority=configured).peering_priority() for pod in pods}
    assert len(priorities) == len(pods)
    assert all(0 <= p < 2**31 for p in priorities)


def test_a_configured_priority_ranks_a_deployment_whatever_its_pod_is_called():
    assert Settings(pod_name="a", priority=200).peering_priority() == 200
    assert Settings(pod_name="a").peering_priority() == Settings(pod_name="a").peering_priority()
