"""docs/plugins.md documents every hook with its exact signature."""

import inspect
import re
from pathlib import Path

from punktfunk_core import hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def _hookspecs() -> dict[str, list[str]]:
    out = {}
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(fn, "punktfunk_spec"):
            out[name] = list(inspect.signature(fn).parameters)
    return out


def _documented() -> dict[str, list[str]]:
    text = DOCS.read_text()
    out = {}
    for m in re.finditer(r"^### `(\w+)\(([^)]*)\)`", text, re.MULTILINE):
        out[m.group(1)] = [a.strip() for a in m.group(2).split(",") if a.strip()]
    return out


def test_hookspecs_are_found():
    specs = _hookspecs()
    assert "stats_window" in specs and "register_stages" in specs
    assert len(specs) >= 10


def test_every_hook_is_documented_with_its_exact_argument_names():
    specs, docs = _hookspecs(), _documented()
    missing = sorted(set(specs) - set(docs))
    assert not missing, f"hooks missing from docs/plugins.md: {missing}"
    wrong = {n: (docs[n], specs[n]) for n in specs if docs[n] != specs[n]}
    assert not wrong, f"documented arguments differ from hookspecs (docs, code): {wrong}"
    stale = sorted(set(docs) - set(specs))
    assert not stale, f"docs/plugins.md documents hooks that do not exist: {stale}"


def test_every_hookspec_has_a_docstring_saying_when_it_is_called():
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(fn, "punktfunk_spec"):
            doc = inspect.getdoc(fn) or ""
            assert "Called" in doc, f"hookspec {name} does not say when it is called"
            assert "Returns" in doc, f"hookspec {name} does not say what it returns"
