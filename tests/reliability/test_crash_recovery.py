"""SIGKILL the operator at seeded points during wiring and during job submission; it must lose nothing.

50 iterations, each: apply work, kill `amlwire run` a random number of ARM calls into it, start it again,
wait for convergence, then check the whole stack: no duplicate AML job, no orphaned or duplicate FIC or
role assignment, and every status names what exists in Azure. AMLWIRE_CHAOS_SEED replays another campaign.
"""

from __future__ import annotations

import os

import pytest

from amlwire_devenv.chaos import WIRING_CALLS, CrashCampaign, OperatorProcess

pytestmark = [pytest.mark.kube, pytest.mark.sandbox, pytest.mark.slow, pytest.mark.timeout(900)]
SEED = int(os.environ.get("AMLWIRE_CHAOS_SEED", "20261122"))


def test_sigkill_during_wiring_and_submission_loses_nothing(harness, tmp_path):
    harness.ctl.timing(ficWriteWindowSeconds=0.05)
    operator = OperatorProcess(harness, tmp_path / "operator.log")
    operator.start()
    campaign = CrashCampaign(harness, operator, SEED)
    try:
        campaign.apply_base()
        results = campaign.run(wirings=25, submissions=25)
    finally:
        operator.stop()
        harness.adopt_everything()
    log = (tmp_path / "operator.log").read_text(errors="replace")
    problems = [f"{r.kind} {r.name} (SIGKILL after {r.killed_at} ARM calls): {p}" for r in results for p in r.problems]
    assert problems == [], f"seed {SEED}:\n" + "\n".join(problems)
    assert len(results) == 50
    assert operator.starts == 51
    assert max(r.converge_seconds for r in results) < 60
    # the kill points spread over the work rather than bunching at its start or end
    wiring_points = {r.killed_at for r in results if r.kind == "wiring"}
    assert len(wiring_points) >= WIRING_CALLS // 3, sorted(wiring_points)
    assert any(r.killed_at >= 10 for r in results if r.kind == "wiring")
    assert "Traceback" not in log, _around_first_traceback(log)


def _around_first_traceback(log: str) -> str:
    at = log.index("Traceback")
    return log[max(0, at - 1500) : at + 4000]
