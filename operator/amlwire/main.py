"""Composition root: settings and adapters are built here and handed to the kopf handlers."""

from __future__ import annotations

from dataclasses import dataclass

from amlwire.config import Settings


@dataclass
class Services:
    """The adapters the handlers reach Azure and Kubernetes through."""

    settings: Settings


def build_services(settings: Settings) -> Services:
    return Services(settings=settings)


def run(settings: Settings | None = None) -> None:
    from amlwire.handlers.operator import run as run_operator

    settings = settings or Settings()
    run_operator(settings, build_services(settings))
