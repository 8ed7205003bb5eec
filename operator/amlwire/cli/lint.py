"""`amlwire lint FILE...`: check AML job YAML before submitting it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from amlwire.domain.lint import Finding, lint_text


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def lint(files: tuple[Path, ...], output: str) -> None:
    """Check AML job YAML files: typed literals in command jobs (F20), empty inputs (F21), MLflow vs custom
    models (F22), unknown keys, missing compute/environment/command, references and modes.

    Exit code 0: no errors (warnings allowed); 1: errors found; 2: a file could not be read.
    """
    findings: list[Finding] = []
    for path in files:
        try:
            text = path.read_text()
        except OSError as error:
            click.echo(f"amlwire lint: cannot read {path}: {error.strerror or error}", err=True)
            sys.exit(2)
        findings += lint_text(text, str(path))
    errors = sum(1 for f in findings if f.severity == "error")
    if output == "json":
        click.echo(
            json.dumps(
                {"findings": [f.__dict__ for f in findings], "errors": errors, "warnings": len(findings) - errors},
                indent=2,
            )
        )
    else:
        for finding in findings:
            click.echo(str(finding))
        click.echo(f"{len(files)} file(s): {errors} error(s), {len(findings) - errors} warning(s)")
    sys.exit(1 if errors else 0)
