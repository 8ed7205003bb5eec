"""One vocabulary: every reason a condition or event carries is declared once in api/reasons.py.

The code names reasons by constant, never inline: an AST scan refuses a string literal where a reason goes.
The e2e harness checks the other half at run time (every reason emitted is in the table).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from amlwire.api import reasons as r
from amlwire.domain.failures import BY_ID
from tests.conftest import REPO

PACKAGE = REPO / "operator" / "amlwire"
SCANNED = ("domain", "reconcile", "handlers", "adapters")
REASON_PATTERN = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
# where the reason goes in each call that carries one (positional index)
REASON_ARGUMENT = {
    "done": 1,
    "progressing": 1,
    "blocked": 1,
    "retrying": 1,
    "kstatus": 1,
    "Event": 1,
    "StepResult": 2,
    "Summary": 2,
    "AzureError": 0,
    "note": 0,
    "warn": 0,
    "Rule": 0,
    "ExtensionDecision": 1,
    "ComputeDecision": 1,
    "Problem": 0,
    "Write": 1,
}


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def inline_reasons(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or _name(node) not in REASON_ARGUMENT:
            continue
        index = REASON_ARGUMENT[_name(node)]
        argument = node.args[index] if len(node.args) > index else None
        keyword = next((k.value for k in node.keywords if k.arg == "reason"), None)
        for value in (argument, keyword):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {_name(node)}(... {value.value!r} ...)")
    return found


def test_no_reason_is_written_inline():
    files = [p for folder in SCANNED for p in (PACKAGE / folder).rglob("*.py")]
    assert files
    offenders = [line for path in files for line in inline_reasons(path)]
    assert offenders == [], "name the reason by its constant in amlwire.api.reasons:\n" + "\n".join(offenders)


def test_the_scan_finds_an_inline_reason(tmp_path):
    sample = REPO / "tests" / "unit" / "_sample_inline_reason.py"
    sample.write_text('done(READY, "Inline", "message")\nEvent("Normal", r.OK, "fine")\n')
    try:
        assert len(inline_reasons(sample)) == 1
    finally:
        sample.unlink()


@pytest.mark.parametrize("name", sorted(r.REASONS))
def test_every_reason_is_a_valid_condition_reason(name):
    assert REASON_PATTERN.match(name), name


def test_every_failure_a_reason_points_at_exists():
    assert {x.failure for x in r.REASONS.values() if x.failure} <= set(BY_ID)


def test_every_doctor_failure_has_a_reason_or_says_why_not():
    """The operator names each failure it can see in a condition; F08, F11, F18, F19, F23 are the doctor's alone
    (events, pods, the workspace identity, logs), and so is a job's data path on any compute (F24-F29)."""
    doctor_only = {"F08", "F11", "F18", "F19", "F23", "F24", "F25", "F26", "F27", "F28", "F29"}
    for failure in (f for f in BY_ID.values() if f.checked_by == "doctor" and f.id not in doctor_only):
        assert any(x.failure == failure.id for x in r.REASONS.values()), failure.id
