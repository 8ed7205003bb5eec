"""A bench run as a script (`python -m bench.jobs`) calls main() only after every function it uses is defined:
bench/jobs.py once defined a helper below its `if __name__ == "__main__"` block and died with a NameError."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCHES = sorted(p for p in (Path(__file__).resolve().parents[2] / "bench").glob("*.py") if p.name != "__init__.py")


def is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test)


def test_the_guard_is_recognised():
    assert is_main_guard(ast.parse('if __name__ == "__main__":\n    main()').body[0])
    assert not is_main_guard(ast.parse("if x:\n    pass").body[0])


@pytest.mark.parametrize("bench", BENCHES, ids=lambda p: p.name)
def test_a_benchs_entry_point_comes_last(bench):
    body = ast.parse(bench.read_text()).body
    guards = [i for i, node in enumerate(body) if is_main_guard(node)]
    assert guards in ([], [len(body) - 1])
