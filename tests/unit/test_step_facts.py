"""A step receives what it declared it needs, typed; using what it did not declare is a type error (mypy), and
a fact its condition promises but the scope lacks is one clear runtime error in the runner, not in each step."""

from __future__ import annotations

import textwrap

import pytest
from mypy import api

from amlwire.api import reasons as r
from amlwire.domain.conditions import StepResult, done
from amlwire.reconcile.attachedcompute import STEPS
from amlwire.reconcile.attachedcompute.scope import CLUSTER, IDENTITY
from amlwire.reconcile.runner import step
from tests.conftest import REPO

HEADER = """\
from amlwire.api import reasons as r
from amlwire.domain.azure import ClusterInfo, IdentityInfo
from amlwire.domain.conditions import StepResult, done
from amlwire.reconcile.attachedcompute.scope import CLUSTER, IDENTITY, Scope
from amlwire.reconcile.runner import step
"""

CASES = {
    "declared and typed": (
        """
        @step(r.FEDERATION_READY, CLUSTER, IDENTITY)
        def fine(scope: Scope, cluster: ClusterInfo, identity: IdentityInfo) -> StepResult:
            return done(r.FEDERATION_READY, "x", f"{cluster.issuer_url} {identity.client_id}")
        """,
        None,
    ),
    "a fact of another type": (
        """
        @step(r.FEDERATION_READY, CLUSTER)
        def wrong(scope: Scope, identity: IdentityInfo) -> StepResult:
            return done(r.FEDERATION_READY, "x", identity.client_id)
        """,
        "[arg-type]",
    ),
    "an undeclared fact read from the scope": (
        """
        @step(r.FEDERATION_READY)
        def undeclared(scope: Scope) -> StepResult:
            return done(r.FEDERATION_READY, "x", scope.observed.cluster.issuer_url or "")
        """,
        "[union-attr]",
    ),
}


@pytest.fixture(scope="module")
def mypy_says(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What mypy, with the project's settings, says about each case (one run for all of them)."""
    folder = tmp_path_factory.mktemp("steps")
    files = {case: folder / f"case_{i}.py" for i, case in enumerate(CASES)}
    for case, path in files.items():
        path.write_text(HEADER + textwrap.dedent(CASES[case][0]))
    config = ["--no-incremental", "--follow-imports=silent", "--config-file", str(REPO / "pyproject.toml")]
    out, _, _ = api.run([*config, *map(str, files.values())])
    return {case: "\n".join(line for line in out.splitlines() if path.name in line) for case, path in files.items()}


@pytest.mark.parametrize("case", CASES)
def test_the_type_checker_holds_steps_to_their_declared_facts(case, mypy_says):
    error = CASES[case][1]
    if error is None:
        assert mypy_says[case] == ""
    else:
        assert error in mypy_says[case], mypy_says[case]


def test_a_steps_facts_are_its_first_needs():
    @step(r.COMPUTE_READY, CLUSTER, IDENTITY, needs=("ExtensionInstalled",))
    def both(scope: object, cluster: object, identity: object) -> StepResult:
        return done(r.COMPUTE_READY, "x", "")

    assert both.needs == (r.CLUSTER_READY, r.IDENTITY_READY, "ExtensionInstalled")
    assert {fact.condition for s in STEPS for fact in s.facts} <= {r.CLUSTER_READY, r.IDENTITY_READY}


def test_a_fact_its_condition_promised_but_the_scope_lacks_is_named():
    from tests.unit.test_compute_steps import make

    scope = make(observe=False)
    with pytest.raises(RuntimeError, match="ClusterReady is True but the step that sets it kept nothing"):
        CLUSTER.of(scope)
