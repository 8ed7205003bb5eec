"""The `amlwire` command."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click


@contextlib.contextmanager
def development_tool(command: str) -> Iterator[None]:
    """`amlwire sandbox` and `amlwire demo` run the packages amlwire_sandbox and amlwire_devenv, which the
    operator image leaves out: say so instead of a traceback."""
    try:
        yield
    except ModuleNotFoundError as missing:
        raise click.ClickException(
            f"`amlwire {command}` is a development tool and needs {missing.name}, which the operator image leaves "
            f"out: run it from a checkout (make demo), where `pip install -e '.[sandbox]'` installs it"
        ) from None
