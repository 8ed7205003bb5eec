"""One failure table feeds the doctor, the linter and docs/troubleshooting.md."""

from __future__ import annotations

from amlwire.domain.datapath import DATA_CHECKS
from amlwire.domain.doctor import CHECKS
from amlwire.domain.failures import FAILURES, troubleshooting_markdown
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
