"""Settings for the command line: a bad AMLWIRE_* variable is one line and exit 2, not a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from amlwire.config import Settings


def load_settings() -> Settings:
    """The AMLWIRE_* settings, or one line per bad setting and exit 2 (not a traceback)."""
    try:
        return Settings()
    except ValidationError as error:
        for problem in error.errors():
            field = "AMLWIRE_" + "_".join(str(part) for part in problem["loc"]).upper()
            message = str(problem["msg"]).removeprefix("Value error, ")
            click.echo(f"amlwire: {field}: {message}", err=True)
        raise SystemExit(2) from None


def kubectl_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """kubectl's global flags, as krew plugins take them (kubectl hands a plugin the arguments after its name):
    --kubeconfig and --context choose the cluster; -n/--namespace is accepted (amlwire's objects that the
    commands read are cluster-scoped, or named in full)."""
    for option in (
        click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), help="kubeconfig to use."),
        click.option("--context", "kube_context", help="kubeconfig context to use."),
        click.option("-n", "--namespace", "kube_namespace", help="Accepted as kubectl passes it."),
    ):
        command = option(command)
    return command
