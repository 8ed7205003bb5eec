"""Composition root: settings and adapters are built here and handed to the kopf handlers (nothing imports it
but the entry points)."""

from __future__ import annotations

from azure.core.credentials import TokenCredential

from amlwire.config import Settings
from amlwire.reconcile.common import Timings
from amlwire.reconcile.services import Services


def build_services(settings: Settings, credential: TokenCredential | None = None) -> Services:
    from amlwire.adapters.azure.adapter import AzureAdapter
    from amlwire.adapters.azure.clients import AzureClients
    from amlwire.adapters.kube.adapter import KubeAdapter
    from amlwire.adapters.kube.client import api_client, load_configuration
    from amlwire.metrics import observe_arm_call

    azure = AzureAdapter(AzureClients(settings, credential), observe=observe_arm_call)
    kube = KubeAdapter(api_client(load_configuration(settings.kubeconfig, settings.connection_pool_size)))
    return Services(settings=settings, azure=azure, kube=kube, timings=Timings.from_settings(settings))


def run(settings: Settings | None = None) -> None:
    from amlwire.handlers.operator import run as run_operator

    settings = settings or Settings()
    run_operator(settings, build_services(settings))
