"""kopf handlers for AmlJob."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from amlwire.api.common import GROUP, VERSION
from amlwire.domain.conditions import first_visit

STEP_TYPES = ("Submitted",)


@kopf.on.resume(GROUP, VERSION, "amljobs")
@kopf.on.create(GROUP, VERSION, "amljobs")
@kopf.on.update(GROUP, VERSION, "amljobs", field="spec")
def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    if not (body.get("status") or {}).get("conditions"):
        generation = body.metadata.get("generation")
        patch.status["conditions"] = [c.wire() for c in first_visit(STEP_TYPES, generation, datetime.now(UTC))]
        patch.status["observedGeneration"] = generation
