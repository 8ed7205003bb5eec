"""`amlwire lint FILE...`: check AML job YAML before submitting it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from amlwire.cli.settings import kubectl_flags
from amlwire.domain.lint import Finding, lint_files


def _expand(paths: tuple[Path, ...]) -> list[Path]:
    """Files as given; folders become the YAML files under them."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        else:
            found.append(path)
    return found


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
@kubectl_flags
def lint(files: tuple[Path, ...], output: str, **_kubectl: Any) -> None:
    """Check AML job YAML files, folders of them, or amlwire AmlJob manifests (all documents of a file):
    typed literals in command jobs (F20), empty inputs (F21), MLflow vs custom models (F22), unknown keys,
    missing compute/environment/command, references and modes. Other Kubernetes objects are for
    `kubectl apply --dry-run=server`.

    Exit code 0: no errors (warnings allowed); 1: errors found; 2: a file could not be read.
    """
    unreadable: list[str] = []
    paths = _expand(files)
    texts: list[tuple[str, str]] = []
    for path in paths:
        try:
            texts.append((path.read_text(), str(path)))
        except (OSError, UnicodeDecodeError) as error:
            unreadable.append(f"cannot read {path}: {getattr(error, 'strerror', None) or error}")
    findings: list[Finding] = lint_files(texts)
    errors = sum(1 for f in findings if f.severity == "error")
    if output == "json":
        report = {
            "findings": [f.__dict__ for f in findings],
            "errors": errors,
            "warnings": len(findings) - errors,
            "unreadable": unreadable,
        }
        click.echo(json.dumps(report, indent=2))
    else:
        for finding in findings:
            click.echo(str(finding))
        for problem in unreadable:
            click.echo(f"amlwire lint: {problem}", err=True)
        click.echo(f"{len(paths)} file(s): {errors} error(s), {len(findings) - errors} warning(s)")
    sys.exit(2 if unreadable else 1 if errors else 0)
