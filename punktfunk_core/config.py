"""TOML config, validated with JSON Schema; plugins contribute their sections.

Every setting has a default, so an absent file is a valid config. Problems
are reported one line each, naming the key path::

    native.fec_percent: 400 is greater than the maximum of 100
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

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
    "console": {
        "type": "object",
        "description": "The web console (gunicorn + Flask).",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean", "default": True},
            "bind": {"type": "string", "default": "127.0.0.1"},
            "port": {"type": "integer", "minimum": 0, "maximum": 65535, "default": 47990},
            "workers": {"type": "integer", "minimum": 1, "maximum": 64, "default": 2},
            "allow_remote_admin": {"type": "boolean", "default": False, "description": "accept the admin token from non-loopback addresses"},
        },
    },
}


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


def validate(schema: dict[str, Any], data: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate and fill defaults; raises :class:`ConfigError` listing every problem."""
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
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"TOML syntax error: {exc}"]) from None
    return validate(schema, data, str(path))
