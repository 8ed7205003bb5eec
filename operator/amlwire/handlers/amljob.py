"""kopf handlers for AmlJob."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from amlwire.api.common import GROUP, VERSION
from amlwire.config import Settings
from amlwire.domain.conditions import first_visit

STEP_TYPES = ("Submitted",)


def reconcile_aml_job(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    if not (body.get("status") or {}).get("conditions"):
        generation = body.metadata.get("generation")
        patch.status["conditions"] = [c.wire() for c in first_visit(STEP_TYPES, generation, datetime.now(UTC))]
        patch.status["observedGeneration"] = generation


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    resource = (GROUP, VERSION, "amljobs")
    for decorator in (
        kopf.on.resume(*resource, registry=registry),
        kopf.on.create(*resource, registry=registry),
        kopf.on.update(*resource, field="spec", registry=registry),
    ):
        decorator(reconcile_aml_job)
