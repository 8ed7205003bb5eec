"""Prometheus metrics of the operator, served on AMLWIRE_METRICS_PORT at /metrics."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Histogram, start_http_server
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILES = PromCounter(
    "amlwire_reconciles", "Reconciles by kind and result (ready, progressing, stalled, error).", ["kind", "result"]
)
RECONCILE_SECONDS = Histogram(
    "amlwire_reconcile_duration_seconds",
    "Time one reconcile took.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ARM_CALLS = PromCounter(
    "amlwire_arm_calls", "Azure Resource Manager calls by route, method and HTTP status.", ["route", "method", "status"]
)


class ObjectStates(Collector):
    """Conditions and AML job states of the objects amlwire handles, as gauges computed at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conditions: dict[tuple[str, str, str], dict[str, str]] = {}
        self._aml_status: dict[tuple[str, str], str] = {}
        self._budgets: dict[str, tuple[int, int]] = {}  # identity name -> (credentials used, clusters remaining)

    def record_budget(self, identity: str, used: int, clusters_remaining: int) -> None:
        with self._lock:
            self._budgets[identity] = (used, clusters_remaining)

    def record(
        self, kind: str, namespace: str | None, name: str, conditions: Iterable[Any], aml_status: str | None = None
    ) -> None:
        key = (kind, namespace or "", name)
        with self._lock:
            self._conditions[key] = {c.type: c.status for c in conditions}
            if kind == "AmlJob" and aml_status:
                self._aml_status[(namespace or "", name)] = aml_status

    def clear(self) -> None:
        with self._lock:
            self._conditions.clear()
            self._aml_status.clear()
            self._budgets.clear()

    def forget(self, kind: str, namespace: str | None, name: str) -> None:
        with self._lock:
            self._conditions.pop((kind, namespace or "", name), None)
            self._aml_status.pop((namespace or "", name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            conditions = Counter(
                (kind, type_, status)
                for (kind, _, _), states in self._conditions.items()
                for type_, status in states.items()
            )
            jobs = Counter(self._aml_status.values())
            budgets = dict(self._budgets)
        family = GaugeMetricFamily(
            "amlwire_conditions", "Objects by kind, condition type and status.", labels=["kind", "type", "status"]
        )
        for (kind, type_, status), count in sorted(conditions.items()):
            family.add_metric([kind, type_, status], count)
        yield family
        aml = GaugeMetricFamily("amlwire_aml_jobs", "AmlJobs by AML job status.", labels=["status"])
        for status, count in sorted(jobs.items()):
            aml.add_metric([status], count)
        yield aml
        used = GaugeMetricFamily(
            "amlwire_identity_federated_credentials",
            "Federated credentials on each identity amlwire wires (Azure allows 20).",
            labels=["identity"],
        )
        left = GaugeMetricFamily(
            "amlwire_identity_clusters_remaining",
            "More clusters each identity can federate before Azure's 20-credential limit.",
            labels=["identity"],
        )
        for identity, (count, remaining) in sorted(budgets.items()):
            used.add_metric([identity], count)
            left.add_metric([identity], remaining)
        yield used
        yield left


STATES = ObjectStates()
REGISTRY.register(STATES)


def observe_arm_call(route: str, method: str, status: int) -> None:
    ARM_CALLS.labels(route=route, method=method, status=str(status)).inc()


def result_of(conditions: Iterable[Any]) -> str:
    by_type = {c.type: c.status for c in conditions}
    if by_type.get("Ready") == "True":
        return "ready"
    if by_type.get("Stalled") == "True":
        return "stalled"
    return "progressing"


def record_reconcile(
    kind: str,
    namespace: str | None,
    name: str,
    seconds: float,
    conditions: Iterable[Any],
    aml_status: str | None = None,
) -> None:
    conditions = list(conditions)
    RECONCILE_SECONDS.labels(kind=kind).observe(seconds)
    RECONCILES.labels(kind=kind, result=result_of(conditions)).inc()
    STATES.record(kind, namespace, name, conditions, aml_status)


def record_error(kind: str) -> None:
    RECONCILES.labels(kind=kind, result="error").inc()


def serve(port: int, address: str = "0.0.0.0") -> Any:  # noqa: S104 - in a pod, Prometheus scrapes the pod IP
    """Start the /metrics endpoint; returns the server to shut down (None for port 0)."""
    if not port:
        return None
    server, _ = start_http_server(port, addr=address)
    return server
