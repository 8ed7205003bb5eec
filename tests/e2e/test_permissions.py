"""amlwire's own identity holds exactly the README's least-privilege table (the dev stack grants it), the
sandbox authorises every ARM call with the built-in roles' real actions, and each missing row is named."""

from __future__ import annotations

import pytest

from amlwire.domain.permissions import PERMISSIONS, Permission
from amlwire_devenv.stack import OPERATOR_PRINCIPAL_ID, least_privilege
from tests.conftest import wait_for
from tests.e2e.harness import WORKSPACE_ID, condition

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]


def _operator_assignments(harness) -> set[tuple[str, str]]:
    return {
        (v["properties"]["scope"].lower(), v["properties"]["roleDefinitionId"].rsplit("/", 1)[-1])
        for v in harness.ctl.state()["resources"].values()
        if v["type"] == "Microsoft.Authorization/roleAssignments"
        and v["properties"]["principalId"] == OPERATOR_PRINCIPAL_ID
    }


def test_a_whole_lifecycle_runs_under_exactly_the_least_privilege_table(harness):
    expected = {(scope.lower(), p.role_id) for scope, p in least_privilege(harness.world, harness.subscription)}
    assert _operator_assignments(harness) == expected
    harness.start()
    mark = harness.ctl.mark()
    compute = harness.apply_compute("robotics-gpu")
    harness.wait_ready(compute)
    job = harness.apply_job("amljob-train.yaml")
    harness.wait_job(job)
    harness.delete_compute(compute)
    wait_for(lambda: harness.ctl.resource(f"{WORKSPACE_ID}/computes/k8s-gpu") is None, timeout=30, what="detached")
    refused = [c for c in harness.ctl.calls(since=mark) if c["status"] == 403]
    assert refused == []


def _denial(obj: dict) -> dict | None:
    for found in (obj.get("status") or {}).get("conditions", []):
        if found["reason"] == "AzurePermissionDenied" and found["type"] not in ("Ready", "Stalled"):
            return found
    return None


@pytest.mark.parametrize("row", PERMISSIONS, ids=[f"{p.role}-on-{p.scope}" for p in PERMISSIONS])
def test_each_missing_row_is_named_with_its_role_and_scope_and_granting_it_heals(harness, row: Permission):
    revoked = harness.revoke(row)
    spec: dict = {}
    if row.scope == "storage":  # RBAC Administrator there reads it too: this row matters without access.mode Ensure
        (storage,) = revoked
        grant_row = next(p for p in PERMISSIONS if p.scope == "grant")
        harness.ctl.delete(harness.assignment_id(storage, grant_row))
        spec = {"access": {"mode": "Verify", "grants": []}}
    harness.start()
    compute = harness.apply_compute("robotics-gpu", **spec)
    read = lambda: harness.compute(compute)  # noqa: E731
    if row.role == "AzureML Data Scientist":  # what only jobs need (RBAC Administrator there reads the workspace)
        harness.wait_ready(compute)
        job = harness.apply_job("amljob-train.yaml")
        read = lambda: harness.job(job)  # noqa: E731
    found = wait_for(lambda: _denial(read()), timeout=30, what=f"a condition naming {row.role}")
    message = found["message"]
    assert f"'{row.role}'" in message, message
    assert any(scope in message for scope in revoked), message
    assert f'--role "{row.role}"' in message
    assert (condition(read(), "Ready") or {}).get("status") == "False"
    for scope in revoked:
        harness.grant(scope, row)
    if row.role == "AzureML Data Scientist":
        harness.wait_job(job, timeout=60)
    else:
        harness.wait_ready(compute, timeout=60)
