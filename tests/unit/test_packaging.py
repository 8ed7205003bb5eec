"""The operator distribution is only the operator: the sandbox and the dev environment are packages of their own,
their dependencies an extra, and the image copies the operator package alone."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
DEV_ONLY = ("trustme", "pyjwt")


def test_the_runtime_dependencies_hold_nothing_only_the_sandbox_needs():
    runtime = [d.lower() for d in PROJECT["dependencies"]]
    assert [d for d in runtime if d.startswith(DEV_ONLY)] == []
    sandbox = [d.lower() for d in PROJECT["optional-dependencies"]["sandbox"]]
    assert all(any(d.startswith(name) for d in sandbox) for name in DEV_ONLY)
    assert "sandbox,test,dev" in (REPO / "Makefile").read_text()  # what `make` installs


def test_the_sandbox_and_the_dev_environment_are_packages_of_their_own():
    operator = REPO / "operator"
    assert {p.name for p in operator.iterdir() if (p / "__init__.py").is_file()} == {
        "amlwire",
        "amlwire_sandbox",
        "amlwire_devenv",
    }
    assert not (operator / "amlwire" / "sandbox").exists()
    assert not (operator / "amlwire" / "devenv").exists()


def test_the_image_copies_the_operator_package_alone():
    copies = [line.split() for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")]
    sources = [words[1] for words in copies if not words[1].startswith("--from")]
    assert "operator" not in sources
    assert "operator/amlwire" in sources
