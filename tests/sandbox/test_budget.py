"""ARM's request budget in the sandbox (rule arm.throttling), driven with azure-mgmt-msi over HTTPS."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import FederatedIdentityCredential

from tests.conftest import OWNER_ROLE_GUID
from tests.sandbox.conftest import SUB, StaticCredential
from tests.sandbox.test_truth import grant

pytestmark = pytest.mark.sandbox
OTHER_PRINCIPAL = "99999999-2222-3333-4444-555555555555"


class Headers:
    """Remembers the headers of the last answer a client received."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def __call__(self, response: Any) -> None:
        self.last = {k.lower(): v for k, v in response.http_response.headers.items()}


def client(arm: dict[str, Any], seen: Headers, principal: str | None = None) -> ManagedServiceIdentityClient:
    sandbox = SimpleNamespace(base_url=arm["base_url"], ca_file=arm["connection_verify"])
    credential = StaticCredential(sandbox, principal) if principal else StaticCredential(sandbox)
    return ManagedServiceIdentityClient(credential, SUB, raw_response_hook=seen, **arm)


def read(msi: ManagedServiceIdentityClient) -> None:
    msi.user_assigned_identities.get("rg-id", "id-ml")


def test_every_arm_answer_says_what_is_left_of_its_bucket(ctl, arm):
    ctl.arm_limits(reads={"size": 10, "refill": 0.01}, writes={"size": 5, "refill": 0.01})
    seen = Headers()
    msi = client(arm, seen)
    read(msi)
    assert seen.last["x-ms-ratelimit-remaining-subscription-reads"] == "9"
    assert seen.last["x-ms-ratelimit-remaining-subscription-global-reads"] == "149"  # 15 times a principal's
    read(msi)
    assert seen.last["x-ms-ratelimit-remaining-subscription-reads"] == "8"
    body = FederatedIdentityCredential(
        issuer="https://issuer.test/", subject="system:serviceaccount:a:b", audiences=["api://AzureADTokenExchange"]
    )
    msi.federated_identity_credentials.create_or_update("rg-id", "id-ml", "fic-a", body)
    assert seen.last["x-ms-ratelimit-remaining-subscription-writes"] == "4"  # writes: another bucket
    msi.federated_identity_credentials.delete("rg-id", "id-ml", "fic-a")
    assert seen.last["x-ms-ratelimit-remaining-subscription-deletes"] == "199"  # deletes: a third one


def test_an_empty_bucket_answers_429_with_retry_after_and_costs_nothing(ctl, arm):
    ctl.arm_limits(reads={"size": 3, "refill": 2})
    seen = Headers()
    msi = client(arm, seen)
    for _ in range(3):
        read(msi)
    with pytest.raises(HttpResponseError) as throttled:
        read(msi)
    assert throttled.value.status_code == 429
    assert throttled.value.error.code == "SubscriptionRequestsThrottled"
    assert "https://aka.ms/arm-throttling" in throttled.value.message
    assert seen.last["retry-after"] == "1"  # ceil(1 token / 2 per second)
    time.sleep(0.6)  # one token back (0.5 s at 2/s): the refused request did not spend it
    read(msi)
    assert seen.last["x-ms-ratelimit-remaining-subscription-reads"] == "0"


def test_each_principal_has_its_own_bucket_and_all_share_the_subscriptions(ctl, arm):
    grant(ctl, OTHER_PRINCIPAL, OWNER_ROLE_GUID, f"/subscriptions/{SUB}")
    ctl.arm_limits(reads={"size": 2, "refill": 0.01}, globalFactor=1.5)  # the subscription's holds 3
    first, second = client(arm, Headers()), client(arm, Headers(), OTHER_PRINCIPAL)
    read(first)
    read(first)
    read(second)  # its own bucket is full, and the subscription's has one left
    with pytest.raises(HttpResponseError) as throttled:
        read(second)
    assert throttled.value.status_code == 429
    assert "actor" in throttled.value.message


def test_only_calls_through_arm_count_and_the_budget_can_be_off(ctl, arm, sandbox):
    ctl.arm_limits(reads={"size": 1, "refill": 0.01})
    ctl.timing()  # the control API is not ARM: no budget
    seen = Headers()
    read(client(arm, seen))
    assert seen.last["x-ms-ratelimit-remaining-subscription-reads"] == "0"
    ctl.arm_limits(enabled=False)
    for _ in range(5):
        read(client(arm, seen))
    assert "x-ms-ratelimit-remaining-subscription-reads" not in seen.last
