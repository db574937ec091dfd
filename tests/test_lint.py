"""ruff and mypy are clean on the whole tree, as pyproject.toml configures them.

- ruff: every Python file of the repository (punktfunk_core, plugins, webui, bench, tests, examples).
- mypy: every module in mypy's default mode, and the modules that pyproject.toml's
  ``[[tool.mypy.overrides]]`` list in strict mode (tests on that list may leave test
  functions and fixtures unannotated). The strict list keeps growing until it is the
  whole tree; a module on it stays strict-clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ["punktfunk_core", "plugins", "webui", "bench", "tests", "examples"]

def test_ruff_finds_nothing_in_the_tree():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *SOURCE_DIRS],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def _packages() -> dict[str, Path]:
    """Import name -> folder: plugins/stats is punktfunk_stats, as pyproject's package-dir says."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = dict(project["tool"]["setuptools"]["package-dir"])
    folders["punktfunk_example"] = "examples/punktfunk-example-plugin/punktfunk_example"
    folders["punktfunk_probe"] = "tests/punktfunk-probe-plugin/punktfunk_probe"
    folders["bench"] = "bench"
    return {name: REPO / folder for name, folder in folders.items()}


def _module_view(base: Path, packages: dict[str, Path]) -> None:
    """A folder where each package has its import name, so mypy finds modules as the interpreter does."""
    base.mkdir(parents=True, exist_ok=True)
    for name, folder in packages.items():
        link = base / name
        if link.is_symlink() and link.resolve() != folder.resolve():
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(folder, target_is_directory=True)


def _module_name(path: Path, packages: dict[str, Path]) -> str:
    for name, folder in packages.items():
        if path.is_relative_to(folder):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(p for p in parts if p != "__init__")
    # tests/ and tests/plugins/ are on the path (pytest's rootdir and PUNKTFUNK_PLUGINS)
    assert path.parent in (REPO / "tests", REPO / "tests" / "plugins"), f"{path} is in no package"
    return path.stem


def _checked_modules(packages: dict[str, Path]) -> list[str]:
    modules = []
    for top in SOURCE_DIRS:
        for path in sorted((REPO / top).rglob("*.py")):
            built = any(part in ("build", "__pycache__") or part.endswith(".egg-info") for part in path.parts)
            if not built:
                modules.append(_module_name(path, packages))
    return modules


def test_mypy_finds_nothing_in_the_tree_strict_where_listed():
    packages = _packages()
    view = REPO / ".mypy_cache" / "view"  # kept between runs, as mypy's cache is
    _module_view(view, packages)
    modules = _checked_modules(packages)
    assert "punktfunk_core.pipeline" in modules and "test_lint" in modules and "bench.cli" in modules
    env = dict(os.environ, MYPYPATH=os.pathsep.join(str(p) for p in (view, REPO / "tests", REPO / "tests" / "plugins")))
    r = subprocess.run([sys.executable, "-m", "mypy", *(arg for m in modules for arg in ("-m", m))], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    # a module on the strict list that is not checked (renamed, moved) is an unused override section
    assert "unused section" not in r.stdout + r.stderr, r.stdout + r.stderr
