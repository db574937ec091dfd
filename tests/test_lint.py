"""ruff and mypy (strict) are clean on the paths below: configured in pyproject.toml.

The list grows until it is the whole tree (plugins/native, plugins/gamestream, webui/
and the rest of the core join after their refactors land); a path on it stays clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CLEAN_PATHS = [
    "punktfunk_core/settings.py",
    "punktfunk_core/config.py",
    "punktfunk_core/apps.py",
    "punktfunk_core/inputevents.py",
    "punktfunk_core/inputsink.py",
    "punktfunk_core/registry.py",
    "punktfunk_core/paths.py",
    "punktfunk_core/doctor.py",
    "punktfunk_core/configfile.py",
    "punktfunk_core/reload.py",
    "punktfunk_core/media/__init__.py",
    "punktfunk_core/media/audio.py",
    "punktfunk_core/media/bitstream.py",
    "punktfunk_core/media/cursor.py",
    "punktfunk_core/media/desktop_audio.py",
    "punktfunk_core/media/doctor.py",
    "punktfunk_core/media/filecap.py",
    "punktfunk_core/media/libyuv.py",
    "punktfunk_core/media/nvenc.py",
    "punktfunk_core/media/options.py",
    "punktfunk_core/media/plugin.py",
    "punktfunk_core/media/ratecontrol.py",
    "punktfunk_core/media/stamp.py",
    "punktfunk_core/media/swenc.py",
    "punktfunk_core/media/testpattern.py",
    "punktfunk_core/media/x11.py",
    "punktfunk_core/media/yuv.py",
    "plugins/input/__init__.py",
    "plugins/input/doctor.py",
    "plugins/input/keymap.py",
    "plugins/input/options.py",
    "plugins/input/plugin.py",
    "plugins/input/uinput.py",
    "plugins/input/xtest.py",
    "plugins/stats/__init__.py",
    "plugins/stats/cli.py",
    "plugins/stats/plugin.py",
    "plugins/stats/recorder.py",
    "plugins/stats/store.py",
    "plugins/stats/summary.py",
    "examples/punktfunk-example-plugin/punktfunk_example/plugin.py",
    "tests/test_core_paths.py",
    "tests/test_core_settings.py",
    "tests/test_lint.py",
]


def test_ruff_finds_nothing_on_the_clean_paths():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *CLEAN_PATHS], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def _module_view(base: Path) -> dict[str, Path]:
    """A folder where each package has its import name (plugins/stats is punktfunk_stats, as
    pyproject's package-dir says), so mypy finds modules as the interpreter does."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_dirs = dict(project["tool"]["setuptools"]["package-dir"])
    package_dirs["punktfunk_example"] = "examples/punktfunk-example-plugin/punktfunk_example"
    base.mkdir(parents=True, exist_ok=True)
    for name, folder in package_dirs.items():
        link = base / name
        if link.is_symlink() and link.resolve() != (REPO / folder).resolve():
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(REPO / folder, target_is_directory=True)
    return {name: REPO / folder for name, folder in package_dirs.items()}


def _module_name(path: str, packages: dict[str, Path]) -> str:
    full = (REPO / path).resolve()
    for name, folder in packages.items():
        if full.is_relative_to(folder.resolve()):
            parts = [name, *full.relative_to(folder.resolve()).with_suffix("").parts]
            return ".".join(p for p in parts if p != "__init__")
    raise AssertionError(f"{path} is in no package")


def test_mypy_strict_finds_nothing_on_the_clean_paths():
    view = REPO / ".mypy_cache" / "view"  # kept between runs, as mypy's cache is
    packages = _module_view(view)
    modules = [_module_name(p, packages) for p in CLEAN_PATHS if not p.startswith("tests/")]
    args = [arg for m in modules for arg in ("-m", m)]
    tests = [p for p in CLEAN_PATHS if p.startswith("tests/")]
    env = dict(os.environ, MYPYPATH=str(view))
    r = subprocess.run([sys.executable, "-m", "mypy", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    # tests are type-checked too, but need not annotate every test function and fixture
    relaxed = ["--allow-untyped-defs", "--allow-incomplete-defs", "--allow-untyped-calls"]
    r = subprocess.run([sys.executable, "-m", "mypy", *relaxed, *tests], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
