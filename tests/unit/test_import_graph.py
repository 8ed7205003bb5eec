"""No import circle anywhere in the project's packages, imports made only for the type checker included (a
circle hidden behind TYPE_CHECKING or a function-level import is still a circle: it is broken, not hidden)."""

from __future__ import annotations

import importlib
import pkgutil
import tomllib
from pathlib import Path

import grimp

PACKAGES = ("amlwire", "amlwire_sandbox", "amlwire_devenv")


def circles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of an import graph with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in imports.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            part = []
            while True:
                member = stack.pop()
                part.append(member)
                if member == module:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def test_circles_are_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_package_imports_in_a_circle():
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=False, cache_dir=None)
    imports = {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    assert len(imports) > 100  # the whole project was read
    assert circles(imports) == []


def named_by_contracts(contracts: list[dict[str, object]]) -> set[str]:
    """Every module an import-linter contract names (a layer may hold several: `a : b`, `a | b`)."""
    names: set[str] = set()
    for contract in contracts:
        for key in ("layers", "source_modules", "forbidden_modules"):
            for entry in contract.get(key) or ():  # type: ignore[attr-defined]
                names.update(part.strip() for part in str(entry).replace("|", ":").split(":"))
    return names


def test_every_top_level_part_is_kept_by_a_contract():
    """A new top-level part of the operator, or a new package, is placed by a contract, not left outside them."""
    config = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    named = named_by_contracts(config["tool"]["importlinter"]["contracts"])
    operator_parts = [f"amlwire.{p.name}" for p in pkgutil.iter_modules(importlib.import_module("amlwire").__path__)]
    assert "amlwire.templates" in operator_parts
    assert len(operator_parts) >= 10
    assert [part for part in [*operator_parts, *PACKAGES[1:]] if part not in named] == []
