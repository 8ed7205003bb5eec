"""Scripts amlwire ships into AML jobs (embedded in the generated command; they run in the job's container)."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

HERE = Path(__file__).resolve().parent


def embedded(script: str, target: str) -> str:
    """A shell step that writes one of these scripts into the container (no code upload needed)."""
    payload = base64.b64encode(gzip.compress((HERE / script).read_bytes(), mtime=0)).decode()
    return f"echo {payload} | base64 -d | gunzip > {target}"
