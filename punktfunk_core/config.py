"""TOML config, validated with JSON Schema; plugins contribute their sections.

Every setting has a default, so an absent file is a valid config. Problems
are reported one line each, naming the key path::

    native.fec_percent: 400 is greater than the maximum of 100

Sections are :class:`punktfunk_core.settings.Settings` classes (the core's
below, plugins' through the ``config_schema`` hook); the ``[[apps]]`` list is a
:class:`punktfunk_core.settings.SettingsList` of :class:`punktfunk_core.apps.App`
whose check finds two apps with one name. With a plugin manager,
a setting declared with ``stage=`` must name a registered stage, and one
declared with ``options_of=`` is checked against the options schema that
stage registered (``stream.encoder_options`` against x264's, say)::

    stream.encoder: 'nvencx' is not one of ['auto', 'av1', 'hevc', 'nvenc', 'x264']

Before the schema sees a value, the whole tree is checked by the same walk
that bounds JSON (:func:`punktfunk_core.boundedjson.problems`): ``nan`` and
``inf`` (which TOML allows and JSON Schema's ``number`` accepts) and tables or
arrays nested more than :data:`MAX_DEPTH` levels are problems naming their key.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from punktfunk_core import apps, boundedjson
from punktfunk_core.paths import FileRefused, read_file_or_pipe, read_regular_file
from punktfunk_core.settings import (
    LIVE_NEW_SESSIONS,
    LIVE_NOW,
    NOTE_KEY,
    OPTIONS_OF_KEY,
    STAGE_KEY,
    Problem,
    Settings,
    SettingsList,
    apply_defaults,
    problems,
    setting,
)
from punktfunk_core.stages import CODECS

if TYPE_CHECKING:
    from punktfunk_core.plugins import PluginManager
    from punktfunk_core.registry import StageRegistry

#: the ``stream.encoder`` value that lets the host choose (``StageRegistry.choose``)
AUTO_ENCODER = "auto"


@dataclass(frozen=True, kw_only=True)
class HostSettings(Settings):
    """The host process."""

    name: str = setting("", "Name shown to clients; empty = the machine's hostname.")
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", live=LIVE_NOW)
    max_sessions: int = setting(4, "sessions at once (a reload lowering it ends none)", minimum=1, maximum=64,
                                live=LIVE_NOW)


@dataclass(frozen=True, kw_only=True)
class StreamSettings(Settings):
    """What sessions stream unless the client negotiates otherwise."""

    capture: str = setting("testpattern", "capture stage name (punktfunk plugins lists them)", stage="capture",
                           live=LIVE_NEW_SESSIONS)
    capture_options: Mapping[str, Any] = setting({}, "options passed to the capture stage", options_of="capture",
                                                 live=LIVE_NEW_SESSIONS)
    encoder: str = setting("auto", "encoder stage name, or auto (nvenc when an NVIDIA GPU is usable, else the "
                                   "codec's CPU encoder)", stage="encoder", live=LIVE_NEW_SESSIONS)
    encoder_options: Mapping[str, Any] = setting({}, "options passed to the encoder (e.g. preset)",
                                                 options_of="encoder", live=LIVE_NEW_SESSIONS)
    width: int = setting(1280, minimum=16, maximum=8192, multipleOf=2, live=LIVE_NEW_SESSIONS)
    height: int = setting(720, minimum=16, maximum=8192, multipleOf=2, live=LIVE_NEW_SESSIONS)
    fps: int = setting(60, minimum=1, maximum=480, live=LIVE_NEW_SESSIONS)
    codec: Literal["h264", "hevc", "av1"] = setting("h264", live=LIVE_NEW_SESSIONS)
    bitrate_kbps: int = setting(10_000, minimum=100, maximum=1_000_000, live=LIVE_NEW_SESSIONS)
    keyframe_interval: int = setting(0, "frames between forced keyframes; 0 = on request only", minimum=0,
                                    live=LIVE_NEW_SESSIONS)


@dataclass(frozen=True, kw_only=True)
class InputSettings(Settings):
    """Client input: the backend that injects it and what each session may inject (docs/input.md)."""

    backend: str = setting("auto", "input stage name: auto (xtest when DISPLAY is set, uinput when /dev/uinput "
                                   "is writable, else none), xtest, uinput, none, or a plugin's",
                           minLength=1, stage="input", live=LIVE_NEW_SESSIONS)
    backend_options: Mapping[str, Any] = setting({}, "options passed to the input stage", options_of="backend",
                                                 live=LIVE_NEW_SESSIONS)
    keyboard: bool = setting(True, "inject keys and text", live=LIVE_NOW)
    mouse: bool = setting(True, "inject pointer motion, buttons and scrolling", live=LIVE_NOW)
    gamepad: bool = setting(True, "create and drive virtual controllers", live=LIVE_NOW)
    touch: bool = setting(True, "inject touch and pen input", live=LIVE_NOW)
    max_events_per_s: int = setting(5000, "sustained events a session may inject per second; more are dropped "
                                          "and counted (moves merged into the previous one are free)",
                                    minimum=10, maximum=1_000_000, live=LIVE_NEW_SESSIONS)
    burst: int = setting(1000, "events a session may inject at once above the sustained rate",
                         minimum=1, maximum=1_000_000, live=LIVE_NEW_SESSIONS)
    queue: int = setting(256, "events waiting for injection per session; beyond it moves are dropped first",
                         minimum=8, maximum=65536, live=LIVE_NEW_SESSIONS)
    inject_on_receive: bool = setting(True, "inject on the thread that received the input when the backend never "
                                            "blocks (xtest, uinput) and nothing is queued; false: always through "
                                            "the session's injector thread", live=LIVE_NEW_SESSIONS)


#: the sections the core owns, by TOML table name: tables, and the ``[[apps]]`` list every protocol
#: shares (its entries and the check of their names live in apps.py)
CORE_SECTIONS: dict[str, type[Settings] | SettingsList[Any]] = {
    "host": HostSettings, "stream": StreamSettings, "input": InputSettings, "apps": apps.APPS}


@dataclass(frozen=True)
class CoreSettings:
    """The core's sections of a loaded config, typed."""

    host: HostSettings
    stream: StreamSettings
    input: InputSettings
    apps: tuple[apps.App, ...]

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> CoreSettings:
        return cls(HostSettings.of(config["host"]), StreamSettings.of(config["stream"]),
                   InputSettings.of(config["input"]), apps.APPS.of(config["apps"]))


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
    """The whole JSON Schema: core sections plus every plugin's section.

    With a plugin manager, a setting that names a stage (``stream.encoder``)
    lists the registered names, and a stage's options (``stream.encoder_options``)
    are checked against the options schema that stage registered.
    """
    props: dict[str, Any] = {name: cls.schema() for name, cls in CORE_SECTIONS.items()}
    if pm is not None:
        for section, (schema, plugin) in pm.collect_named("config_schema").items():
            if section in props:
                raise ValueError(f"plugin {plugin!r} registers config section {section!r}, which the core owns")
            props[section] = copy.deepcopy(schema)
        for section, schema in props.items():
            _add_stage_rules(section, schema, pm.stages)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "punktfunk host configuration",
        "type": "object",
        "additionalProperties": False,
        "properties": props,
    }


def _add_stage_rules(section: str, schema: dict[str, Any], stages: StageRegistry) -> None:
    """Stage names become an ``enum`` of the registered ones; the options of the
    stage a section names are checked by an ``if``/``then`` rule per stage."""
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    for prop in props.values():
        kind = prop.get(STAGE_KEY) if isinstance(prop, dict) else None
        if kind:
            prop["enum"] = ([AUTO_ENCODER] if kind == "encoder" else []) + stages.names(kind)
    rules: list[dict[str, Any]] = []
    for key, prop in props.items():
        name_key = prop.get(OPTIONS_OF_KEY) if isinstance(prop, dict) else None
        if not isinstance(name_key, str) or not props.get(name_key, {}).get(STAGE_KEY):
            continue
        kind = props[name_key][STAGE_KEY]
        for entry in stages.entries():
            if entry.kind == kind and entry.options_schema is not None:
                rules.append({"if": {"properties": {name_key: {"const": entry.name}}, "required": [name_key]},
                              "then": {"properties": {key: copy.deepcopy(entry.options_schema)}}})
        if kind == "encoder":
            rules += _auto_encoder_rules(section, props, name_key, key, stages)
    if rules:
        schema.setdefault("allOf", []).extend(rules)


def _auto_encoder_rules(section: str, props: dict[str, Any], name_key: str, options_key: str,
                        stages: StageRegistry) -> list[dict[str, Any]]:
    """With ``encoder = "auto"`` the options must suit every encoder auto may pick for the codec
    (else a config that works on one machine fails on the next); each problem says for which."""
    codecs = props.get("codec", {}).get("enum", list(CODECS))
    rules = []
    for codec in codecs:
        branches = []
        for entry in stages.candidates("encoder", codec):
            if (schema := entry.options_schema) is not None:
                name = entry.name
                note = (f"for {name}, which {section}.{name_key} = \"auto\" may pick for {codec}; "
                        f"name the encoder to give only its options")
                branches.append({**copy.deepcopy(schema), NOTE_KEY: note})
        if branches:
            rules.append({"if": {"properties": {name_key: {"const": AUTO_ENCODER}, "codec": {"const": codec}},
                                 "required": [name_key, "codec"]},
                          "then": {"properties": {options_key: {"allOf": branches}}}})
    return rules


def _problem_lines(schema: dict[str, Any], data: Any) -> list[str]:
    # a value of the wrong type breaks a stage's options rule too: say it once
    return list(dict.fromkeys(_line(p) for p in problems(schema, data)))


def _line(p: Problem) -> str:
    where = ".".join(map(str, p.path)) or "(top level)"
    if p.unknown:
        what = "section" if len(p.path) == 1 else "key"
        message = f"unknown {what} (allowed: {', '.join(p.allowed or ())})"
    else:
        message = p.message
    return f"{where}: {message}" + (f" ({p.note})" if p.note else "")


def protocol_enabled(config: Mapping[str, Any], protocol: str) -> bool:
    """A protocol runs only when its section says ``enabled = true``; a plugin
    without a section, or a section without that key, stays off."""
    section = config.get(protocol)
    return isinstance(section, Mapping) and section.get("enabled") is True


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[str]]:
    """What differs between two loaded configs: section → the keys whose values differ.

    A reload applies exactly these (and can tell which of them need a restart).
    """
    out: dict[str, list[str]] = {}
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys = sorted(k for k in set(a) | set(b) if a.get(k, _ABSENT) != b.get(k, _ABSENT))
        else:
            keys = [] if a == b else ["(whole section)"]
        if keys:
            out[section] = keys
    return out


_ABSENT = object()


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
    filled = apply_defaults(schema, data)  # checked with its defaults: a stage's options follow its default name too
    lines = _problem_lines(schema, filled)
    # what the schema cannot say (two apps with one name), told beside what it can
    lines += [_line(Problem((name, *p.path), p.message, p.allowed, p.note))
              for name, section in CORE_SECTIONS.items() for p in section.check(filled.get(name))]
    if lines:
        raise ConfigError(source, lines)
    return filled


def load(path: str | Path | None, pm: PluginManager | None = None, *, pipes: bool = True) -> dict[str, Any]:
    """Read, validate and default a config file (None: all defaults).

    ``pipes=False`` (a running host's reload): a FIFO or pipe in the file's place
    is refused at once instead of read, so no host thread waits for a writer."""
    schema = build_schema(pm)
    if path is None:
        return validate(schema, {}, "defaults")
    path = Path(path)
    try:
        raw = (read_file_or_pipe(path, MAX_FILE_BYTES, PIPE_WAIT_S) if pipes  # `config check /dev/stdin` works
               else read_regular_file(path, MAX_FILE_BYTES))
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


_TOML_KEY = re.compile(r"""\s*((?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'))*)\s*=""")  # noqa: E501
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
