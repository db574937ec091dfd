"""Rules of docs/architecture.md that a grep can check: the core names no plugin,
plugins reach the host through the IPC client API, and the repository stands
on its own (a clone has nothing beside it)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "punktfunk_core"
#: the builtin plugins (entry points in pyproject.toml) and their packages
PLUGINS = ("native", "gamestream", "stats", "console", "fleet")
#: ("input" is also a stage kind, so only its package is checked)
PACKAGES = ("punktfunk_native", "punktfunk_gamestream", "punktfunk_stats", "punktfunk_webui", "punktfunk_fleet",
            "punktfunk_input")
#: a plugin by name: its package, its name alone or as a prefix ("gamestream.status", "native_…");
#: "stats" alone is no plugin name in the core (the stats data model and the stats_window hook are the core's)
PLUGIN_NAME = re.compile(rf"^(?:(?:{'|'.join(PACKAGES)})\b|(?:{'|'.join(PLUGINS)})(?:\.|$)|(?:native|gamestream)_)")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _names_in_code(path: Path) -> list[tuple[int, str]]:
    """Every string literal (docstrings and comments aside), imported module and identifier of a file."""
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstrings(tree)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Attribute):
            out.append((node.lineno, node.attr))
        elif isinstance(node, ast.Name):
            out.append((node.lineno, node.id))
        elif isinstance(node, ast.arg):
            out.append((node.lineno, node.arg))
    return out


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, node.module or "", [a.name for a in node.names]))
    return out


def _core_files() -> list[Path]:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 20 and CORE / "host.py" in files
    return files


def test_the_rule_recognises_a_plugin_name():
    hits = [s for s in ("gamestream", "native.clients", "punktfunk_webui.app", "gamestream_layout", "stats",
                        "stats.start") if PLUGIN_NAME.match(s)]
    assert hits == ["gamestream", "native.clients", "punktfunk_webui.app", "gamestream_layout", "stats",
                    "stats.start"]
    assert not [s for s in ("stats_window", "punktfunk_core.stats", "StatsSample", "nativeish", "consoles")
                if PLUGIN_NAME.match(s)]


def test_the_core_names_no_plugin():
    found = [f"{p.relative_to(ROOT)}:{line}: {name!r}" for p in _core_files() for line, name in _names_in_code(p)
             if PLUGIN_NAME.match(name)]
    assert not found, "the core names a plugin (move it into the plugin, or behind a hook):\n" + "\n".join(found)


def test_the_core_imports_no_plugin_package():
    found = [f"{p.relative_to(ROOT)}:{line}: {mod}" for p in _core_files() for line, mod, _ in _imports(p)
             if mod.split(".")[0] in PACKAGES]
    assert not found, "the core imports a plugin package:\n" + "\n".join(found)


@pytest.mark.parametrize("folder", ["plugins", "webui"])
def test_plugins_reach_the_host_through_the_ipc_client_api(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files
    found = [f"{p.relative_to(ROOT)}:{line}" for p in files for line, mod, names in _imports(p)
             if "call_host" in names or mod.endswith(".call_host")]
    found += [f"{p.relative_to(ROOT)}" for p in files if "call_host" in p.read_text()]
    assert not found, "use punktfunk_core.ipc.connect(), not call_host:\n" + "\n".join(found)


def test_nothing_in_the_repository_points_outside_it():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    outside = re.compile("|".join(re.escape(s) for s in ("../" + "shared", "shared" + "/design")))
    found = []
    for rel in tracked.splitlines():
        path = ROOT / rel
        if not path.is_file() or path.suffix in (".png", ".so", ".whl"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{rel}:{n}" for n, line in enumerate(text.splitlines(), 1) if outside.search(line)]
    assert len(tracked.splitlines()) > 50
    assert not found, "a clone has no shared/ beside it; put the facts into docs/ in our words:\n" + "\n".join(found)
