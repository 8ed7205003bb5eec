"""Composition root: settings and adapters are built here and handed to the kopf handlers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from amlwire.config import Settings
from amlwire.reconcile.common import KeyedLocks, Timings
from amlwire.reconcile.jobwatch import JobWatch
from amlwire.reconcile.ports import AzurePort, KubePort


@dataclass
class Services:
    """What the handlers reach Azure and Kubernetes through, plus per-object locks."""

    settings: Settings
    azure: AzurePort
    kube: KubePort
    timings: Timings
    object_locks: KeyedLocks = field(default_factory=KeyedLocks)
    watch: JobWatch = field(default_factory=JobWatch)
    extra: dict[str, Any] = field(default_factory=dict)
    # Set when the operator exits: background loops in threads end on it even if kopf never told them to stop.
    shutdown: threading.Event = field(default_factory=threading.Event)


def build_services(settings: Settings, credential: Any = None) -> Services:
    from amlwire.adapters.azure.adapter import AzureAdapter
    from amlwire.adapters.azure.clients import AzureClients
    from amlwire.adapters.kube.adapter import KubeAdapter
    from amlwire.adapters.kube.client import api_client, load_configuration
    from amlwire.metrics import observe_arm_call

    azure = AzureAdapter(AzureClients(settings, credential), observe=observe_arm_call)
    kube = KubeAdapter(api_client(load_configuration(settings.kubeconfig)))
    return Services(settings=settings, azure=azure, kube=kube, timings=Timings.from_settings(settings))


def run(settings: Settings | None = None) -> None:
    from amlwire.handlers.operator import run as run_operator

    settings = settings or Settings()
    run_operator(settings, build_services(settings))
