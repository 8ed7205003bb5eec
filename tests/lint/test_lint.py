"""amlwire lint over a corpus of good and bad AML job YAML; each file says what a reviewer expects of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from amlwire.cli.main import cli
from amlwire.domain.lint import lint_text

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(CORPUS.glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (?P<rule>none|[FL]\d\d)(?: (?P<line>\d+))?(?: (?P<severity>warning))?$", re.M)


def expectations(path: Path) -> set[tuple[str, int, str]]:
    found = {(m["rule"], int(m["line"] or 0), m["severity"] or "error") for m in EXPECT.finditer(path.read_text())}
    assert found, f"{path.name} states no expectation"
    return set() if found == {("none", 0, "error")} else found


def test_the_corpus_is_large_enough_and_mixed():
    good = [p for p in FILES if not expectations(p)]
    bad = [p for p in FILES if expectations(p)]
    assert len(FILES) >= 20
    assert len(good) >= 5
    assert len(bad) >= 15


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_corpus(path):
    findings = lint_text(path.read_text(), path.name)
    assert {(f.rule, f.line, f.severity) for f in findings} == expectations(path), [str(f) for f in findings]
    for finding in findings:
        assert finding.file == path.name
        assert finding.field
        assert finding.message


def test_messages_name_the_fix():
    findings = {f.rule: f for f in lint_text((CORPUS / "bad-several.yaml").read_text())}
    assert "plain values: seed: 7" in findings["F20"].message
    assert "Empty string is not allowed for input value" in findings["F21"].message
    assert "use type: custom_model" in findings["F22"].message
    assert findings["F20"].field == "inputs.seed"


def test_cli_exit_codes_and_output(tmp_path):
    runner = CliRunner()
    good = runner.invoke(cli, ["lint", str(CORPUS / "good-command.yaml")])
    assert good.exit_code == 0
    assert "0 error(s)" in good.output
    bad = runner.invoke(cli, ["lint", str(CORPUS / "good-command.yaml"), str(CORPUS / "bad-empty-string.yaml")])
    assert bad.exit_code == 1
    assert f"{CORPUS / 'bad-empty-string.yaml'}:8: error F21 inputs.note:" in bad.output
    warnings_only = runner.invoke(cli, ["lint", str(CORPUS / "bad-unpinned-and-bare-compute.yaml")])
    assert warnings_only.exit_code == 0
    missing = runner.invoke(cli, ["lint", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2
    report = json.loads(runner.invoke(cli, ["lint", "-o", "json", str(CORPUS / "bad-several.yaml")]).output)
    assert report["errors"] == 3
    assert {f["rule"] for f in report["findings"]} == {"F20", "F21", "F22"}


def test_a_folder_is_every_yaml_file_under_it_and_json_survives_an_unreadable_file(tmp_path):
    runner = CliRunner()
    folder = runner.invoke(cli, ["lint", str(CORPUS)])
    assert f"{len(FILES)} file(s):" in folder.output
    assert folder.exit_code == 1  # the corpus holds errors
    report = json.loads(
        runner.invoke(
            cli, ["lint", "-o", "json", str(CORPUS / "good-command.yaml"), str(tmp_path / "nope.yaml")]
        ).stdout
    )
    assert report["errors"] == 0
    assert report["unreadable"] == [f"cannot read {tmp_path / 'nope.yaml'}: No such file or directory"]


def test_the_repos_own_examples_lint_clean():
    """A folder holds jobs, Kubernetes objects and other YAML (the sandbox's world): only jobs are checked."""
    result = CliRunner().invoke(cli, ["lint", str(Path(__file__).parents[2] / "examples")])
    assert result.exit_code == 0, result.output
    assert "world.yaml:3: warning L10 <document>: neither an AML job" in result.output
