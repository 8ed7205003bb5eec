"""One failure table feeds the doctor, the linter and docs/troubleshooting.md."""

from __future__ import annotations

from amlwire.domain.datapath import DATA_CHECKS
from amlwire.domain.doctor import CHECKS
from amlwire.domain.failures import (
    BY_ID,
    DATA_PATH_CHAIN,
    FAILURES,
    WIRING_CHAIN,
    Failure,
    _chain,
    troubleshooting_markdown,
)
from tests.conftest import REPO


def test_troubleshooting_page_is_generated_from_the_table():
    assert (REPO / "docs" / "troubleshooting.md").read_text() == troubleshooting_markdown(), "run 'make docs'"


def test_every_failure_has_a_checker():
    ids = [f.id for f in FAILURES]
    assert ids == [f"F{i:02d}" for i in range(1, 30)]
    checked = {check.failure for check in CHECKS} | {failure for failure, _ in DATA_CHECKS}
    assert sorted(checked) == [f.id for f in FAILURES if f.checked_by == "doctor"]


def test_every_failure_is_on_the_page():
    page = troubleshooting_markdown()
    for failure in FAILURES:
        assert f"| {failure.id} | {failure.title} |" in page


def _placed(chain):
    return [failure for _, checks in chain for failure, _ in checks]


def test_the_doctors_chains_are_derived_from_where_each_failure_says_it_is_checked():
    """A check exists exactly for the failures placed in a chain; every link holds at least one check."""
    assert sorted(_placed(WIRING_CHAIN)) == sorted(c.failure for c in CHECKS)
    assert sorted(_placed(DATA_PATH_CHAIN)) == sorted(failure for failure, _ in DATA_CHECKS)
    assert set(_placed(WIRING_CHAIN)) | set(_placed(DATA_PATH_CHAIN)) == {
        f.id for f in FAILURES if f.checked_by == "doctor"
    }
    assert all(checks for _, checks in (*WIRING_CHAIN, *DATA_PATH_CHAIN))
    links = dict(WIRING_CHAIN)
    assert BY_ID["F01"].wiring is not None
    assert dict(links["cluster"])["F01"] == BY_ID["F01"].wiring[1]


def test_a_failure_placed_on_a_link_the_chain_lacks_is_refused():
    import pytest

    stray = Failure("F99", "t", "s", "fix", "doctor", wiring=("nowhere", "x"))
    with pytest.raises(ValueError, match="nowhere"):
        _chain(("cluster",), lambda f: stray.wiring if f is FAILURES[0] else None)


def test_a_check_of_a_failure_without_a_place_in_its_chain_is_refused():
    import pytest

    from amlwire.domain.doctor import check

    unplaced = next(f.id for f in FAILURES if f.wiring is None)
    with pytest.raises(ValueError, match="chain"):
        check(unplaced)(lambda facts: None)
