"""amlwire: run the operator, diagnose the wiring, lint AML job YAML, run the sandbox or the demo."""

from __future__ import annotations

import click

from amlwire import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="amlwire")
def cli() -> None:
    """Wire AKS into Azure Machine Learning with keyless workload identity, and run IsaacLab jobs on it."""


@cli.command()
def run() -> None:
    """Run the operator (settings from AMLWIRE_* environment variables)."""
    from amlwire.main import run as run_operator

    run_operator()
