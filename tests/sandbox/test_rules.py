"""The sandbox's rules: one registry, each rule enforced where a `# rule: ID` marker says, docs generated."""

from __future__ import annotations

import re
from pathlib import Path

from amlwire_sandbox.rules import RULES, markdown

REPO = Path(__file__).resolve().parents[2]
SANDBOX = REPO / "operator" / "amlwire_sandbox"
MARKER = re.compile(r"#\s*rule:\s*([a-z][a-z0-9.-]+)")


def _markers() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(SANDBOX.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for rule_id in MARKER.findall(line):
                found.setdefault(rule_id, []).append(f"{path.relative_to(REPO)}:{number}")
    return found


def test_docs_sandbox_md_is_generated_from_the_registry():
    assert (REPO / "docs" / "sandbox.md").read_text() == markdown(), "run 'make docs'"


def test_every_rule_is_enforced_somewhere_and_every_marker_names_a_rule():
    markers, declared = _markers(), {rule.id for rule in RULES}
    assert sorted(declared - set(markers)) == [], "rules no code enforces (add a '# rule: ID' marker)"
    assert {m: where for m, where in markers.items() if m not in declared} == {}, "markers naming no rule"


def test_rules_have_a_source_and_unverified_ones_an_option_or_a_note():
    assert len({rule.id for rule in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.source in ("spec", "doc", "field", "inference", "unverified"), rule.id
        assert rule.citation or rule.source == "unverified", f"{rule.id} names no source"
        if rule.source == "unverified":
            assert rule.option or rule.note, f"{rule.id} is unverified: give it a world option or a note"
