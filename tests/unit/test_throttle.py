"""The ARM pacer: amlwire's model of ARM's token buckets (pure, fake clock)."""

from __future__ import annotations

import pytest

from amlwire.adapters.azure.pacing import arm_subscription, remaining_tokens, throttled_by_provider, top_level_resource
from amlwire.adapters.azure.throttle import DEFAULT_HOLD, HOLD_GRACE, ArmPacer, BucketLimit, kind_of
from amlwire.domain.errors import AzureError

MAX_HOLD = 60.0
SUB, OTHER = "6F1C2B1E-5c1a-4f5e-9a51-1b2c3d4e5f60", "0b7e6a52-33c4-4d8e-9f10-2a3b4c5d6e7f"
SMALL = {"reads": BucketLimit(5, 5), "writes": BucketLimit(4, 2), "deletes": BucketLimit(3, 1)}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pacer(share: float = 1.0, max_wait: float = 30.0) -> tuple[ArmPacer, Clock]:
    clock = Clock()
    return ArmPacer(SMALL, share=share, max_hold=MAX_HOLD, max_wait=max_wait, clock=clock), clock


@pytest.mark.parametrize(
    ("method", "kind"),
    [
        ("GET", "reads"),
        ("head", "reads"),
        ("PUT", "writes"),
        ("PATCH", "writes"),
        ("POST", "writes"),
        ("DELETE", "deletes"),
    ],
)
def test_operation_types_are_arms(method, kind):
    assert kind_of(method) == kind


def test_a_full_bucket_sends_at_once_then_at_the_refill_rate():
    gate, clock = pacer()
    assert [gate.reserve(SUB, "PUT", "x") for _ in range(4)] == [0, 0, 0, 0]
    # the bucket is empty: each further write gets the next slot, 1/refill apart
    assert [gate.reserve(SUB, "PUT", "x") for _ in range(3)] == pytest.approx([0.5, 1.0, 1.5])
    clock.now += 1.5  # the promised slots are used up by then; the next waits one interval
    assert gate.reserve(SUB, "PUT", "x") == pytest.approx(0.5)


BUDGETS = [
    # (case, spent (subscription, method) x4, asked, waits)
    ("deletes are their own budget", (SUB, "PUT"), (SUB, "DELETE"), 0.0),
    ("reads are their own budget", (SUB, "PUT"), (SUB, "GET"), 0.0),
    ("PATCH shares the writes budget", (SUB, "PUT"), (SUB, "PATCH"), 0.5),
    ("POST shares the writes budget", (SUB, "PUT"), (SUB, "POST"), 0.5),
    ("subscription case does not matter", (SUB, "PUT"), (SUB.lower(), "PUT"), 0.5),
    ("other subscriptions have their own", (SUB, "PUT"), (OTHER, "PUT"), 0.0),
]


@pytest.mark.parametrize(("case", "spent", "asked", "waits"), BUDGETS, ids=[b[0] for b in BUDGETS])
def test_budgets(case, spent, asked, waits):
    gate, _ = pacer()
    for _ in range(4):
        gate.reserve(*spent, "x")
    assert gate.reserve(*asked, "x") == pytest.approx(waits)


def test_a_wait_longer_than_allowed_is_refused_without_taking_a_slot():
    gate, _ = pacer(max_wait=1.0)
    for _ in range(6):  # 4 at once, then 0.5 s and 1.0 s
        gate.reserve(SUB, "PUT", "x")
    with pytest.raises(AzureError) as refused:
        gate.reserve(SUB, "PUT", "submit AML job j1")
    assert refused.value.reason == "AzureThrottled"
    assert refused.value.retryable
    assert refused.value.retry_after == pytest.approx(1.5)
    assert refused.value.message.startswith("submit AML job j1: Azure's budget for writes")
    assert gate.tokens(SUB, "PUT") == pytest.approx(-2.0)  # the refused request promised nothing


def test_azure_reporting_less_than_amlwire_counted_wins():
    gate, _ = pacer()
    gate.reserve(SUB, "PUT", "x")
    gate.observe(SUB, "PUT", 1)  # someone else spent the rest
    assert gate.reserve(SUB, "PUT", "x") == 0
    assert gate.reserve(SUB, "PUT", "x") == pytest.approx(0.5)


def test_azure_reporting_more_never_raises_amlwires_count():
    gate, _ = pacer()
    for _ in range(4):
        gate.reserve(SUB, "PUT", "x")
    gate.observe(SUB, "PUT", 150)
    assert gate.tokens(SUB, "PUT") == pytest.approx(0.0)


def test_a_share_scales_the_bucket_and_leaves_the_rest_of_azures_to_others():
    gate, clock = pacer(share=0.5)
    assert gate.refill("PUT") == pytest.approx(1.0)
    assert [gate.reserve(SUB, "PUT", "x") for _ in range(3)] == pytest.approx([0, 0, 1.0])
    clock.now += 10
    gate.observe(SUB, "PUT", 3)  # Azure has 3 of 4 left: amlwire keeps 2 for the others
    assert gate.tokens(SUB, "PUT") == pytest.approx(1.0)


HOLDS = [
    # (case, throttled (method, Retry-After), asked method, after seconds, hold left)
    ("same budget, at once", ("PUT", 2.0), "PUT", 0.0, 2.0),
    ("reads stay open after a write 429", ("PUT", 2.0), "GET", 0.0, 0.0),
    ("deletes stay open after a write 429", ("PUT", 2.0), "DELETE", 0.0, 0.0),
    ("open again once Retry-After has passed", ("GET", 2.0), "GET", 2.0, 0.0),
    ("no Retry-After: the default hold", ("GET", None), "GET", 0.0, DEFAULT_HOLD),
    ("an absurd Retry-After is capped", ("GET", 86400.0), "GET", 0.0, MAX_HOLD),
]


@pytest.mark.parametrize(("case", "throttled", "asked", "after", "left"), HOLDS, ids=[h[0] for h in HOLDS])
def test_a_429_holds_its_budget(case, throttled, asked, after, left):
    gate, clock = pacer()
    gate.hold(SUB, *throttled)
    clock.now += after
    assert gate.remaining(SUB, asked) == pytest.approx(left)


def test_during_a_hold_requests_are_refused_then_its_last_second_is_waited_out():
    gate, clock = pacer()
    gate.hold(SUB, "PUT", 3.0)
    with pytest.raises(AzureError) as refused:
        gate.reserve(SUB, "PUT", "assign role on /x")
    assert "Retry-After" in refused.value.message
    assert refused.value.retry_after == pytest.approx(3.0)
    clock.now += 3.0 - HOLD_GRACE / 2
    assert gate.reserve(SUB, "PUT", "x") == pytest.approx(HOLD_GRACE / 2)


def test_a_shorter_retry_after_never_shortens_a_longer_hold():
    gate, _ = pacer()
    gate.hold(SUB, "PUT", 5.0)
    gate.hold(SUB, "PUT", 1.0)
    assert gate.remaining(SUB, "PUT") == pytest.approx(5.0)


URLS = [
    ("https://arm.test/subscriptions/S/resourceGroups/g?api-version=1", "S"),
    ("https://ARM.test/Subscriptions/S/providers/x", "S"),
    ("https://arm.test/providers/Microsoft.Authorization/operations", None),  # tenant level
    ("https://arm.test/history/v1.0/subscriptions/S/runs/r", None),  # run history: another service
    ("https://eastus.api.azureml.ms/subscriptions/S/x", None),  # another host
    ("https://login.test/tenant/oauth2/v2.0/token", None),
]


@pytest.mark.parametrize(("url", "subscription"), URLS)
def test_only_arm_subscription_requests_are_charged(url, subscription):
    assert arm_subscription(url, "arm.test") == subscription


@pytest.mark.parametrize(
    ("headers", "method", "left"),
    [
        ({"x-ms-ratelimit-remaining-subscription-reads": "249"}, "GET", 249),
        (
            {
                "x-ms-ratelimit-remaining-subscription-writes": "12",
                "x-ms-ratelimit-remaining-subscription-global-writes": "7",
            },
            "PUT",
            7,
        ),
        ({"x-ms-ratelimit-remaining-subscription-writes": "12"}, "DELETE", None),
        ({"x-ms-ratelimit-remaining-subscription-deletes": "n/a"}, "DELETE", None),
        ({}, "GET", None),
    ],
)
def test_remaining_headers(headers, method, left):
    assert remaining_tokens(headers, method) == left


def test_a_429_while_a_request_waited_for_its_slot_sends_it_back():
    gate, clock = pacer()
    for _ in range(4):
        gate.reserve(SUB, "PUT", "x")
    assert gate.reserve(SUB, "PUT", "x") == pytest.approx(0.5)
    gate.hold(SUB, "PUT", 2.0)  # another thread's answer, while this one slept
    clock.now += 0.5
    with pytest.raises(AzureError) as refused:
        gate.still_held(SUB, "PUT", "submit AML job j2")
    assert "while this request waited" in refused.value.message
    clock.now += 1.0
    assert gate.still_held(SUB, "PUT", "x") == pytest.approx(0.5)  # its last second is waited out


def test_other_services_are_not_metered_but_honour_their_429s():
    gate, _ = pacer()
    service = "eastus.api.azureml.ms/history"
    assert [gate.reserve(service, "GET", "x", metered=False) for _ in range(20)] == [0] * 20
    gate.hold(service, "GET", 5.0)
    with pytest.raises(AzureError):
        gate.reserve(service, "GET", "x", metered=False)
    assert gate.reserve(SUB, "GET", "x") == 0  # ARM's budget is another scope


def test_concurrent_token_requests_fetch_once_per_scope():
    import threading
    import time as clock

    from amlwire.adapters.azure.clients import SingleFlightCredential

    class Cached:
        """A credential with its own cache, as azure-identity's are: the first request fetches."""

        def __init__(self) -> None:
            self.fetches: list[tuple[str, ...]] = []
            self.cache: dict[tuple[str, ...], str] = {}

        def get_token(self, *scopes: str, **_: object) -> str:
            if scopes not in self.cache:
                clock.sleep(0.05)  # Entra answering
                self.fetches.append(scopes)
                self.cache[scopes] = f"token for {scopes}"
            return self.cache[scopes]

    inner = Cached()
    credential = SingleFlightCredential(inner)
    threads = [
        threading.Thread(target=credential.get_token, args=(scope,))
        for scope in ["https://management.azure.com/.default"] * 26 + ["https://storage.azure.com/.default"] * 4
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(inner.fetches) == [
        ("https://management.azure.com/.default",),
        ("https://storage.azure.com/.default",),
    ]


IDENTITY = f"/subscriptions/{SUB}/resourceGroups/rg-id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"
OTHER = IDENTITY.replace("/id", "/id-other")
SCOPED = [
    # (case, resource asked, method asked, refused)
    ("the throttled identity's writes wait", IDENTITY, "PUT", True),
    ("its resource ID in another case is the same identity", IDENTITY.upper(), "PUT", True),
    ("its reads do not", IDENTITY, "GET", False),
    ("another identity's writes go on", OTHER, "PUT", False),
    ("the rest of the subscription's writes go on", None, "PUT", False),
]


@pytest.mark.parametrize(("case", "resource", "method", "refused"), SCOPED, ids=[s[0] for s in SCOPED])
def test_a_providers_429_holds_only_its_resource(case, resource, method, refused):
    gate, _ = pacer()
    gate.hold(SUB, "PUT", 30.0, resource=IDENTITY)
    if refused:
        with pytest.raises(AzureError) as held:
            gate.reserve(SUB, method, "write a credential", resource=resource)
        assert "azure throttled writes of id" in held.value.message.lower()
        return
    assert gate.reserve(SUB, method, "x", resource=resource) == 0
    assert gate.remaining(SUB, "PUT") == 0


PATHS = [
    ("a credential: its identity", f"{IDENTITY}/federatedIdentityCredentials/c", IDENTITY),
    (
        "an extension: its cluster",
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerService/"
        "managedClusters/aks/providers/Microsoft.KubernetesConfiguration/extensions/azureml",
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerService/managedClusters/aks",
    ),
    ("a subscription-wide read: none", "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions", None),
]


@pytest.mark.parametrize(("case", "path", "resource"), PATHS, ids=[p[0] for p in PATHS])
def test_the_resource_a_provider_throttles(case, path, resource):
    assert top_level_resource(f"https://management.azure.com{path}?api-version=1") == resource


@pytest.mark.parametrize(
    ("headers", "provider"),
    [
        ({"x-ms-ratelimit-remaining-subscription-writes": "180"}, True),
        ({"x-ms-ratelimit-remaining-subscription-writes": "0"}, False),
        ({}, False),
    ],
)
def test_a_429_with_arms_budget_left_came_from_the_provider(headers, provider):
    assert throttled_by_provider(headers, "PUT") is provider
