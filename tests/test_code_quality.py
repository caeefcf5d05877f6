"""The code's own checks, run with the rest of the suite: ruff, mypy on ``barkkit/``, no import cycle between the
project's modules, no library function over 70 lines (``tests/code_checks.py``)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.code_checks import MAX_FUNCTION_LINES, REPO_ROOT, import_cycles, long_functions


def _tool(name: str) -> list[str]:
    """How to run ``name`` (this interpreter's module, else a program on PATH); the test skips without it."""
    if importlib.util.find_spec(name) is not None:
        return [sys.executable, "-m", name]
    program = shutil.which(name)
    if program is None:
        pytest.skip(f"{name} is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    return [program]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    result = _run([*_tool("ruff"), "check", "--no-fix", "."])
    assert result.returncode == 0, f"ruff check . found problems:\n{result.stdout}{result.stderr}"


def test_mypy_finds_nothing_in_barkkit() -> None:
    # pyproject.toml's [tool.mypy] says what is checked and how; .mypy_cache (git-ignored) makes a rerun ~1 s.
    result = _run([*_tool("mypy"), "--cache-dir", str(REPO_ROOT / ".mypy_cache")])
    assert result.returncode == 0, f"mypy found problems:\n{result.stdout}{result.stderr}"


def test_no_import_cycle() -> None:
    cycles = import_cycles()
    assert not cycles, "modules that import each other (function-local imports count):\n" + "\n".join(cycles)


def test_no_library_function_over_the_limit() -> None:
    functions = long_functions()
    assert not functions, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(map(str, functions))


# The checkers themselves, on small made-up trees --------------------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_a_function_local_import_makes_a_cycle(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "barkkit/__init__.py": "",
        "barkkit/a.py": "from barkkit.b import thing\n",
        "barkkit/b.py": "thing = 1\n\ndef late():\n    from barkkit import a\n    return a\n",
    })
    (cycle,) = import_cycles(root)
    assert cycle.startswith("barkkit.a <-> barkkit.b:")
    assert "barkkit.b imports barkkit.a (barkkit/b.py:4)" in cycle and "(barkkit/a.py:1)" in cycle


def test_type_checking_imports_do_not_count_but_their_else_does(tmp_path: Path) -> None:
    files = {
        "barkkit/__init__.py": "",
        "barkkit/a.py": "import barkkit.b\n",
        "barkkit/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from barkkit.a import A\n",
    }
    assert import_cycles(_tree(tmp_path / "one", files)) == []
    files["barkkit/b.py"] = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    pass\nelse:\n    from . import a\n"
    assert len(import_cycles(_tree(tmp_path / "two", files))) == 1
    files["barkkit/b.py"] = "from typing import TYPE_CHECKING\nif not TYPE_CHECKING:\n    from .a import x\n"
    assert len(import_cycles(_tree(tmp_path / "three", files))) == 1


def test_packages_in_plugins_and_relative_imports(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "barkkit/__init__.py": "",
        "plugins/barkkit_x/__init__.py": "from . import engine\n",  # a package's __init__ importing its modules
        "plugins/barkkit_x/engine.py": "from .stages.one import run\n",
        "plugins/barkkit_x/stages/__init__.py": "",
        "plugins/barkkit_x/stages/one.py": "def run():\n    from ..engine import step\n",
        "classifiers/barkkit_y/__init__.py": "import barkkit_x.engine\n",
    })
    (cycle,) = import_cycles(root)
    assert cycle.startswith("barkkit_x.engine <-> barkkit_x.stages.one:")
    # The implicit import of a parent package's __init__ is not an edge: barkkit_x <-> barkkit_x.engine is no cycle.
    assert "barkkit_x <->" not in cycle and "barkkit_y" not in cycle


def test_long_functions_are_counted_from_def_to_their_last_line(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    root = _tree(tmp_path, {
        "barkkit/__init__.py": "",
        "barkkit/ok.py": f"@decorator\ndef at_the_limit():\n{body}",
        "plugins/barkkit_z/long.py": f"class K:\n    async def over(self):\n        y = 0\n{textwrap.indent(body, '    ')}",
    })
    (found,) = long_functions(root)
    assert (found.path, found.line, found.name, found.lines) == (Path("plugins/barkkit_z/long.py"), 2, "over", 71)
