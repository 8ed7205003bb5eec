"""Settings for the command line: a bad AMLWIRE_* variable is one line and exit 2, not a traceback."""

from __future__ import annotations

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
