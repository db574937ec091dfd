"""Where the host's config file is, and a commented one with every key at its default.

``punktfunk serve`` (and ``config check``, ``console``, a reload) reads ``-c FILE`` when
given, else ``$PUNKTFUNK_CONFIG_DIR/host.toml`` (``~/.config/punktfunk/host.toml``)
when it exists, else the built-in defaults; it says which. ``punktfunk config init``
writes that file from the schema: every section the core and the loaded plugins
declare, every key at its default with its description as a comment, and for
each stage-options key the options of each registered stage, commented out.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from punktfunk_core import __version__
from punktfunk_core import config as configmod
from punktfunk_core.paths import Paths, atomic_write, ensure_private_dir
from punktfunk_core.plugins import PluginManager
from punktfunk_core.settings import LIVE_KEY, OPTIONS_OF_KEY, STAGE_KEY

#: how `serve` names the config it runs with when no file was found
DEFAULTS = "built-in defaults"


def resolve(explicit: str | None, paths: Paths | None = None) -> str | None:
    """The file to load: ``explicit`` (``-c FILE``) when given, else the default
    ``host.toml`` when it exists, else None (the built-in defaults)."""
    if explicit:
        return explicit
    default = (paths or Paths.from_env()).host_config
    return str(default) if default.exists() else None


def describe(path: str | None, paths: Paths | None = None) -> str:
    """One line saying which config is used."""
    if path is not None:
        return f"config: {path}"
    return f"config: {DEFAULTS} (no {(paths or Paths.from_env()).host_config})"


def apply_overrides(cfg: dict[str, Any], overrides: Mapping[tuple[str, str], Any]) -> dict[str, Any]:
    """Command-line options (``--console-port``, ``--gamestream`` …) over a loaded config;
    kept by the host so that a reload of the file does not undo them."""
    for (section, key), value in overrides.items():
        cfg.setdefault(section, {})[key] = value
    return cfg


# -- config init --------------------------------------------------------------------------------
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_WIDTH = 100


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def toml_string(text: str) -> str:
    # JSON's escapes are TOML basic-string escapes; TOML wants DEL escaped too
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    """A JSON value (what a schema's default is) as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no TOML for {value!r} in a default")
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise ValueError(f"no TOML for {type(value).__name__} in a default")


def _comment(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, _WIDTH, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ",
                         break_on_hyphens=False)


def _facts(prop: Mapping[str, Any]) -> str:
    """What a key takes and when a change applies, e.g. ``integer 1 … 64; reload: now``."""
    words: list[str] = []
    if "enum" in prop:
        words.append("one of " + ", ".join(toml_value(v) for v in prop["enum"]))
    elif isinstance(prop.get("type"), str):
        kind = prop["type"]
        if "minimum" in prop and "maximum" in prop:
            kind += f" {prop['minimum']} … {prop['maximum']}"
        elif "minimum" in prop:
            kind += f" ≥ {prop['minimum']}"
        elif "maximum" in prop:
            kind += f" ≤ {prop['maximum']}"
        words.append(kind)
    live = prop.get(LIVE_KEY)
    words.append(f"reload: {live}" if live else "needs a restart")
    return "; ".join(words)


def _stage_options(pm: PluginManager | None, kind: str, options_key: str) -> list[str]:
    """Commented-out options of every registered stage of ``kind``, at their defaults."""
    if pm is None:
        return []
    lines: list[str] = []
    for entry in pm.stages.entries():
        props = (entry.options_schema or {}).get("properties") or {}
        defaults = {k: p["default"] for k, p in props.items() if isinstance(p, dict) and "default" in p}
        if entry.kind != kind or not defaults:
            continue
        lines.append(f"#   for {kind} = {toml_string(entry.name)}:")
        lines.append(f"#     {options_key} = {toml_value(defaults)}")
    return lines


def _table(name: str, schema: Mapping[str, Any], pm: PluginManager | None) -> list[str]:
    lines: list[str] = []
    if schema.get("description"):
        lines += _comment(str(schema["description"]))
    lines.append(f"[{name}]")
    props: Mapping[str, Any] = schema.get("properties", {})
    nested = []
    for key, prop in props.items():
        if prop.get("type") == "object" and "properties" in prop:
            nested.append((key, prop))
            continue
        lines.append("")
        if prop.get("description"):
            lines += _comment(str(prop["description"]))
        lines.append(f"# ({_facts(prop)})")
        if isinstance(prop.get(OPTIONS_OF_KEY), str):
            kind = props.get(prop[OPTIONS_OF_KEY], {}).get(STAGE_KEY)
            if kind:
                lines += _stage_options(pm, kind, key)
        if "default" in prop:
            lines.append(f"{toml_key(key)} = {toml_value(prop['default'])}")
        else:
            lines.append(f"# {toml_key(key)} = (not set by default)")
    for key, prop in nested:
        lines += ["", *_table(f"{name}.{toml_key(key)}", prop, pm)]
    return lines


def _array_of_tables(name: str, schema: Mapping[str, Any]) -> list[str]:
    """A commented-out example entry of a ``[[name]]`` list whose default is empty."""
    lines = _comment(str(schema.get("description", "")))
    if schema.get(LIVE_KEY):
        lines.append(f"# (reload: {schema[LIVE_KEY]})")
    item = schema.get("items", {})
    required = set(item.get("required", ()))
    lines.append(f"# [[{toml_key(name)}]]")
    for key, prop in item.get("properties", {}).items():
        about = str(prop.get("description", ""))
        if key in required:
            lines.append(f"# {toml_key(key)} = …  # required{': ' + about if about else ''}")
        elif "default" in prop:
            lines.append(f"# {toml_key(key)} = {toml_value(prop['default'])}" + (f"  # {about}" if about else ""))
    return lines


def render(pm: PluginManager | None) -> str:
    """The text of ``punktfunk config init``: loads to exactly the built-in defaults."""
    schema = configmod.build_schema(pm)
    out = [
        f"# punktfunk host configuration (written by `punktfunk config init`, punktfunk {__version__}).",
        "# Every key is at its built-in default; change what you need, delete the rest if you like.",
        "# `punktfunk config check` validates this file; `punktfunk config schema` prints the JSON Schema.",
        "# A key marked \"reload: now\" or \"reload: new sessions\" changes on `punktfunk config reload`",
        "# (or SIGHUP to `punktfunk serve`); the others need a restart.",
    ]
    for name, section in schema["properties"].items():
        out.append("")
        if section.get("type") == "array":
            if section.get("default"):
                raise ValueError(f"{name}: a list section with a non-empty default is not written by config init")
            out += _array_of_tables(name, section)
        else:
            out += _table(toml_key(name), section, pm)
    return "\n".join(out) + "\n"


def init(path: Path, pm: PluginManager | None, paths: Paths) -> None:
    """Write the commented defaults to ``path`` (0600); ``FileExistsError`` when it exists."""
    if path == paths.host_config:
        ensure_private_dir(paths.config)
    atomic_write(path, render(pm).encode(), 0o600, replace=False)


def cmd_config_init(args: argparse.Namespace) -> int:
    paths = Paths.from_env()
    path = Path(args.output) if args.output else paths.host_config
    try:
        init(path, args.pm, paths)
    except FileExistsError:
        print(f"punktfunk: {path} exists; not replacing it (edit it, or remove it first)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"punktfunk: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {path} (every key at its default; `punktfunk config check` validates it)")
    return 0


def add_init_command(csub: Any) -> None:
    c = csub.add_parser("init", help="write a commented config file with every key at its default")
    c.add_argument("--output", metavar="FILE",
                   help="where to write it (default: host.toml in the config dir); an existing file is kept")
    c.set_defaults(func=cmd_config_init)
