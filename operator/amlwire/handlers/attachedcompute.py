"""kopf handlers for AttachedCompute."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from amlwire.api.common import GROUP, VERSION
from amlwire.domain.conditions import first_visit

STEP_TYPES = (
    "ClusterReady",
    "IdentityReady",
    "FederationReady",
    "ServiceAccountsReady",
    "ExtensionReady",
    "AccessReady",
    "InstanceTypesReady",
    "ComputeReady",
)


@kopf.on.resume(GROUP, VERSION, "attachedcomputes")
@kopf.on.create(GROUP, VERSION, "attachedcomputes")
@kopf.on.update(GROUP, VERSION, "attachedcomputes", field="spec")
def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    if not (body.get("status") or {}).get("conditions"):
        generation = body.metadata.get("generation")
        patch.status["conditions"] = [c.wire() for c in first_visit(STEP_TYPES, generation, datetime.now(UTC))]
        patch.status["observedGeneration"] = generation
