"""TOML config, validated with JSON Schema; plugins contribute their sections.

Every setting has a default, so an absent file is a valid config. Problems
are reported one line each, naming the key path::

    native.fec_percent: 400 is greater than the maximum of 100

Before the schema sees a value, the whole tree is checked by the same walk
that bounds JSON (:func:`punktfunk_core.boundedjson.problems`): ``nan`` and
``inf`` (which TOML allows and JSON Schema's ``number`` accepts) and tables or
arrays nested more than :data:`MAX_DEPTH` levels are problems naming their key.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from punktfunk_core import boundedjson
from punktfunk_core.paths import FileRefused, read_file_or_pipe

if TYPE_CHECKING:
    from punktfunk_core.plugins import PluginManager

CORE_SECTIONS: dict[str, dict[str, Any]] = {
    "host": {
        "type": "object",
        "description": "The host process.",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "default": "", "description": "Name shown to clients; empty = the machine's hostname."},
            "log_level": {"enum": ["debug", "info", "warning", "error"], "default": "info"},
            "max_sessions": {"type": "integer", "minimum": 1, "maximum": 64, "default": 4},
        },
    },
    "stream": {
        "type": "object",
        "description": "What sessions stream unless the client negotiates otherwise.",
        "additionalProperties": False,
        "properties": {
            "capture": {"type": "string", "default": "testpattern", "description": "capture stage name (punktfunk plugins lists them)"},
            "capture_options": {"type": "object", "default": {}, "description": "options passed to the capture stage"},
            "encoder": {"type": "string", "default": "auto", "description": "encoder stage name, or auto (nvenc when an NVIDIA GPU is usable, else the codec's CPU encoder)"},
            "encoder_options": {"type": "object", "default": {}, "description": "options passed to the encoder (e.g. preset)"},
            "width": {"type": "integer", "minimum": 16, "maximum": 8192, "multipleOf": 2, "default": 1280},
            "height": {"type": "integer", "minimum": 16, "maximum": 8192, "multipleOf": 2, "default": 720},
            "fps": {"type": "integer", "minimum": 1, "maximum": 480, "default": 60},
            "codec": {"enum": ["h264", "hevc", "av1"], "default": "h264"},
            "bitrate_kbps": {"type": "integer", "minimum": 100, "maximum": 1_000_000, "default": 10_000},
            "keyframe_interval": {"type": "integer", "minimum": 0, "default": 0, "description": "frames between forced keyframes; 0 = on request only"},
        },
    },
}


#: no setting nests this deep; deeper values are refused before anything recurses into them
MAX_DEPTH = 16
#: a config file is a few KB
MAX_FILE_BYTES = 1024 * 1024
#: a config read from a pipe or FIFO must arrive within this long
PIPE_WAIT_S = 10.0


class ConfigError(Exception):
    """The config is invalid; ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def build_schema(pm: PluginManager | None = None) -> dict[str, Any]:
    """The whole JSON Schema: core sections plus every plugin's section."""
    props = copy.deepcopy(CORE_SECTIONS)
    if pm is not None:
        for section, (schema, plugin) in pm.collect_named("config_schema").items():
            if section in props:
                raise ValueError(f"plugin {plugin!r} registers config section {section!r}, which the core owns")
            props[section] = copy.deepcopy(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "punktfunk host configuration",
        "type": "object",
        "additionalProperties": False,
        "properties": props,
    }


def apply_defaults(schema: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` with every missing property that has a default filled in."""
    out = dict(data)
    for key, sub in schema.get("properties", {}).items():
        if key not in out:
            if "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object" and "properties" in sub:
                out[key] = {}
        if isinstance(out.get(key), dict) and "properties" in sub:
            out[key] = apply_defaults(sub, out[key])
    return out


def _problem_lines(schema: dict[str, Any], data: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    lines: list[str] = []
    for err in sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        path = ".".join(str(p) for p in err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
            for key in extra:
                where = f"{path}.{key}" if path else key
                what = "section" if not path else "key"
                lines.append(f"{where}: unknown {what} (allowed: {', '.join(allowed)})")
            continue
        lines.append(f"{path or '(top level)'}: {err.message}")
    return lines


def _key_path(path: list[Any], limit: int = MAX_DEPTH + 1) -> str:
    shown = ".".join(str(p) for p in path[:limit])
    return shown + (".…" if len(path) > limit else "") if shown else "(top level)"


def _tree_problem_lines(data: Any) -> list[str]:
    """nan/inf and over-deep nesting, one line each, naming the key."""
    return [f"{_key_path(path)}: {reason}" for path, reason in boundedjson.problems(data, MAX_DEPTH)]


def validate(schema: dict[str, Any], data: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate and fill defaults; raises :class:`ConfigError` listing every problem."""
    tree = _tree_problem_lines(data)
    if tree:  # the schema walk and the defaults recurse: not into a tree like this
        raise ConfigError(source, tree)
    problems = _problem_lines(schema, data)
    if problems:
        raise ConfigError(source, problems)
    return apply_defaults(schema, data)


def load(path: str | Path | None, pm: PluginManager | None = None) -> dict[str, Any]:
    """Read, validate and default a config file (None: all defaults)."""
    schema = build_schema(pm)
    if path is None:
        return validate(schema, {}, "defaults")
    path = Path(path)
    try:
        raw = read_file_or_pipe(path, MAX_FILE_BYTES, PIPE_WAIT_S)  # `config check /dev/stdin` works
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    except FileRefused as exc:
        raise ConfigError(str(path), [str(exc).removeprefix(f"{path} ")]) from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"TOML syntax error: {exc}"]) from None
    except RecursionError:  # tomllib recurses per level: name the key from the text instead
        raise ConfigError(str(path), [f"{_too_deep_key(text)}: nested more than {MAX_DEPTH} levels deep"]) from None
    return validate(schema, data, str(path))


_TOML_KEY = re.compile(r"""\s*((?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'))*)\s*=""")
_TOML_TABLE = re.compile(r"\s*\[\[?\s*([^\]]*?)\s*\]\]?\s*(?:#.*)?$")


def _dotted(key: str) -> str:
    return ".".join(part.strip() for part in key.split("."))


def _too_deep_key(text: str) -> str:
    """The key path (``table.key.inner``) of the first value in ``text`` whose
    brackets nest more than MAX_DEPTH levels. Only called when tomllib itself gave
    up, so it needs to find the place, not to parse TOML."""
    table, key = "", ""
    brackets: list[str] = []  # open "[" and "{" of the current value
    inner: list[str] = []  # the key being set in each open inline table
    line_start = True
    i, n = 0, len(text)
    while i < n:
        if line_start and not brackets:  # a table header, `key = value`, or neither
            line_start = False
            end = text.find("\n", i)
            end = n if end < 0 else end
            header = _TOML_TABLE.match(text, i, end)
            assignment = None if header else _TOML_KEY.match(text, i, end)
            if header:
                table = _dotted(header.group(1))
            elif assignment:
                key = _dotted(assignment.group(1))
            i = assignment.end() if assignment else end
            continue
        c = text[i]
        if c == "\n":
            line_start = True
        elif c in "[{":
            brackets.append(c)
            if len(brackets) > MAX_DEPTH:
                return ".".join(p for p in (table, key, *inner) if p)
            if c == "{":
                inner.append("")
        elif c in "]}":
            if brackets and brackets.pop() == "{":
                inner.pop()
        elif c == "=" and brackets and brackets[-1] == "{":
            inner[-1] = _dotted(text[max(text.rfind("{", 0, i), text.rfind(",", 0, i)) + 1:i])
        elif c in "\"'":  # a string: brackets inside it do not count
            quote = c * 3 if text.startswith(c * 3, i) else c
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                j += 2 if c == '"' and text[j] == "\\" else 1
            i = j + len(quote) - 1
        elif c == "#":
            end = text.find("\n", i)
            i = (n if end < 0 else end) - 1
        i += 1
    return "(top level)"
