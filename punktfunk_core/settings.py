"""Declared settings: one frozen dataclass gives the JSON Schema, the defaults and a typed view.

Config sections and stage options are both declared this way::

    @dataclass(frozen=True, kw_only=True)
    class ChunkOptions(Settings):
        \"\"\"Options of the chunk packetizer.\"\"\"
        payload_size: int = setting(1200, "datagram payload in bytes", minimum=16, maximum=65_000)

``ChunkOptions.schema()`` is the JSON Schema (the field's Python type, its
default, its description and the JSON Schema keywords given to
:func:`setting`); ``ChunkOptions.of(values)`` is the typed view of values that
passed it, and ``ChunkOptions.take("chunk", options)`` checks a stage's
options dict and returns that view, raising ``ValueError`` with one line per
problem. The default of a setting is written once, in its field.

A field may itself be a ``Settings`` class (a nested table) or a list of them
(``tuple[Step, ...]``); :class:`SettingsList` is a top-level list of tables
(TOML ``[[apps]]``). Rules across fields that JSON Schema can say (``if``/
``then``) are the class's ``schema_rules``; what it cannot say (two entries
with one name) is the class's :meth:`Settings.check`.

Every check goes through :func:`problems`, which the config file uses too, so
a problem reads the same wherever it is found: a key path and what is wrong.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar

import jsonschema

#: marks a setting without a default (``"required"`` in the schema)
REQUIRED: Any = dataclasses.MISSING

#: schema keyword naming the stage kind whose registered names a string setting takes
STAGE_KEY = "x-punktfunk-stage"
#: schema keyword naming the sibling setting whose stage an object setting holds the options of
OPTIONS_OF_KEY = "x-punktfunk-options-of"
#: schema keyword saying when a reload's new value takes effect: :data:`LIVE_NOW` or
#: :data:`LIVE_NEW_SESSIONS`; a setting without it needs a restart (ports, bind addresses …)
LIVE_KEY = "x-punktfunk-live"
#: a reload applies the new value at once (running sessions included)
LIVE_NOW = "now"
#: a reload applies the new value to sessions that start after it
LIVE_NEW_SESSIONS = "new sessions"


def setting(default: Any = REQUIRED, description: str = "", *, stage: str | None = None,
            options_of: str | None = None, live: str | None = None, **keywords: Any) -> Any:
    """A field of a :class:`Settings` class.

    ``keywords`` are JSON Schema keywords added to the field's schema as they
    are (``minimum``, ``maximum``, ``multipleOf``, ``enum``, ``pattern``,
    ``items``, ``maxItems`` …). ``stage="encoder"``: the value names a
    registered stage of that kind (the config check lists them);
    ``options_of="encoder"``: the value is the options of the stage named by
    that sibling setting, checked against that stage's options schema.
    ``live=LIVE_NOW`` or ``live=LIVE_NEW_SESSIONS``: a reload (SIGHUP, ``punktfunk
    config reload``) may change it without a restart; without ``live`` it needs one.
    """
    extra = dict(keywords)
    if live is not None:
        if live not in (LIVE_NOW, LIVE_NEW_SESSIONS):
            raise ValueError(f"live must be {LIVE_NOW!r} or {LIVE_NEW_SESSIONS!r}, not {live!r}")
        extra[LIVE_KEY] = live
    if stage is not None:
        extra[STAGE_KEY] = stage
    if options_of is not None:
        extra[OPTIONS_OF_KEY] = options_of
    metadata = {"description": description, "schema": extra}
    if default is REQUIRED:
        return dataclasses.field(metadata=metadata)
    if isinstance(default, (dict, list)):  # a fresh copy per instance, as dataclasses want
        return dataclasses.field(default_factory=functools.partial(copy.deepcopy, default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Settings:
    """Base of typed settings classes; subclasses are ``@dataclass(frozen=True, kw_only=True)``."""

    #: JSON Schema rules across fields (``{"if": ..., "then": ...}``), the schema's ``allOf``;
    #: a rule may carry a :data:`NOTE_KEY` that the problems it finds are told with
    schema_rules: ClassVar[tuple[Mapping[str, Any], ...]] = ()

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The JSON Schema of these settings (a fresh copy: callers may change it)."""
        return copy.deepcopy(_schema_of(cls))

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Self:
        """The typed view of ``values`` that passed :meth:`schema` (absent keys take their defaults)."""
        hints = _hints(cls)
        kwargs = {f.name: _typed(hints[f.name], values[f.name]) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                  if f.name in values}
        return cls(**kwargs)

    @classmethod
    def take(cls, label: str, options: Mapping[str, Any] | None) -> Self:
        """Check a stage's ``options`` and return them typed; ``ValueError`` names each problem."""
        values = check_options(label, _schema_of(cls), options)
        found = cls.check(values)
        if found:
            raise ValueError("; ".join(_option_line(label, p) for p in found))
        return cls.of(values)

    @classmethod
    def check(cls, values: Any) -> list[Problem]:
        """What the schema cannot say (nothing, unless a subclass says so). Runs on values
        the schema may have refused, so it looks before it trusts a type."""
        return []


S = TypeVar("S", bound=Settings)


@dataclasses.dataclass(frozen=True)
class SettingsList(Generic[S]):
    """A list of settings tables, each an ``item`` (a top-level TOML ``[[name]]``)."""

    item: type[S]
    description: str = ""
    max_items: int | None = None
    #: what the schema cannot say about the whole list (the same name twice …); like
    #: :meth:`Settings.check` it sees the raw entries, valid or not
    rule: Callable[[Any], list[Problem]] | None = None
    #: when a reload's new list takes effect (see :func:`setting`); None: after a restart
    live: str | None = None

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "default": [], "items": self.item.schema()}
        if self.description:
            schema["description"] = self.description
        if self.live is not None:
            schema[LIVE_KEY] = self.live
        if self.max_items is not None:
            schema["maxItems"] = self.max_items
        return schema

    def of(self, values: Sequence[Mapping[str, Any]]) -> tuple[S, ...]:
        """The typed entries of a list that passed :meth:`schema` and :meth:`check`."""
        return tuple(self.item.of(v) for v in values)

    def check(self, values: Any) -> list[Problem]:
        found = self.rule(values) if self.rule is not None else []
        if isinstance(values, (list, tuple)):
            for i, entry in enumerate(values):
                found += [dataclasses.replace(p, path=(i, *p.path)) for p in self.item.check(entry)]
        return sorted(found, key=_problem_order)

    def take(self, label: str, values: Sequence[Mapping[str, Any]]) -> tuple[S, ...]:
        """Check a list given outside a config file; ``ValueError`` names each problem by key path."""
        found = problems(self.schema(), list(values)) + self.check(list(values))
        if found:
            raise ValueError("; ".join(f"{'.'.join(map(str, (label, *p.path)))}: {p.message}" for p in found))
        return self.of(values)


# -- schema generation -----------------------------------------------------------------------
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


_SCHEMAS: dict[type[Settings], dict[str, Any]] = {}


def _schema_of(cls: type[Settings]) -> dict[str, Any]:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _SCHEMAS[cls] = _build_schema(cls)
    return schema


def _build_schema(cls: type[Settings]) -> dict[str, Any]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a @dataclass(frozen=True, kw_only=True)")
    hints = _hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        prop = _json_type(hints[f.name], f"{cls.__name__}.{f.name}")
        if f.metadata.get("description"):
            prop["description"] = f.metadata["description"]
        for key, value in copy.deepcopy(f.metadata.get("schema", {})).items():  # items={...} adds to the item type
            prop[key] = {**prop[key], **value} if isinstance(prop.get(key), dict) and isinstance(value, dict) else value
        if f.default is not dataclasses.MISSING:
            if f.default is not None:  # None: "absent", the reader decides (e.g. the stream's pixel format)
                prop["default"] = _jsonable(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            prop["default"] = _jsonable(f.default_factory())
        else:
            required.append(f.name)
        props[f.name] = prop
    schema: dict[str, Any] = {"type": "object"}
    doc = cls.__dict__.get("__doc__")
    if doc:
        schema["description"] = " ".join(doc.strip().split("\n\n")[0].split())
    schema["additionalProperties"] = False
    schema["properties"] = props
    if required:
        schema["required"] = required
    if cls.schema_rules:
        schema["allOf"] = copy.deepcopy([dict(rule) for rule in cls.schema_rules])
    return schema


_JSON_TYPES: dict[Any, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _json_type(hint: Any, where: str) -> dict[str, Any]:
    """The JSON Schema type of a field's annotation."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        arms = [_json_type(a, where) for a in typing.get_args(hint) if a is not type(None)]
        if len(arms) == 1:
            return arms[0]
        if all(set(a) == {"type"} for a in arms):
            return {"type": [a["type"] for a in arms]}
        return {"anyOf": arms}
    if origin is Literal:
        return {"enum": list(typing.get_args(hint))}
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{where}: use tuple[X, ...] for a list setting")
        return {"type": "array", "items": _json_type(args[0], where)}
    if origin in (dict, Mapping):
        value = typing.get_args(hint)[1] if len(typing.get_args(hint)) == 2 else Any
        return {"type": "object"} if value is Any else {"type": "object",
                                                         "additionalProperties": _json_type(value, where)}
    if hint in (dict, Mapping):
        return {"type": "object"}
    if isinstance(hint, type) and issubclass(hint, Settings):  # a nested table
        return hint.schema()
    if hint is Any:
        return {}
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    raise TypeError(f"{where}: no JSON Schema type for {hint!r}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _typed(hint: Any, value: Any) -> Any:
    """A checked JSON value as the field's Python type: lists become tuples,
    tables read-only mappings (or the nested ``Settings`` class they are), whole
    numbers in a float setting floats and in an int setting ints."""
    arms = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)
    arms = tuple(a for a in arms if a is not type(None))
    nested = [a for a in arms if isinstance(a, type) and issubclass(a, Settings)]
    if isinstance(value, Mapping) and nested:
        return nested[0].of(value)
    if isinstance(value, (list, tuple)):
        items = [typing.get_args(a)[0] for a in arms if typing.get_origin(a) is tuple]
        return tuple(_typed(items[0], v) for v in value) if items else tuple(value)
    if isinstance(value, dict):
        return types.MappingProxyType(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and float in arms and int not in arms:
        return float(value)
    if isinstance(value, float) and value.is_integer() and int in arms and float not in arms:
        return int(value)  # JSON Schema's "integer" takes 2.0
    return value


# -- checking -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a value: where (key path) and what."""

    path: tuple[str | int, ...]
    message: str
    #: for an unknown key: the keys its table allows
    allowed: tuple[str, ...] | None = None
    #: a note of the schema branch that found it (e.g. which stage's options)
    note: str = ""

    @property
    def unknown(self) -> bool:
        return self.allowed is not None


#: schema keyword whose value :func:`problems` appends to the problems found under it
NOTE_KEY = "x-punktfunk-note"


def problems(schema: Mapping[str, Any], data: Any) -> list[Problem]:
    """Every way ``data`` breaks ``schema``, sorted by key path; an unknown key is one problem each."""
    validator = jsonschema.Draft202012Validator(schema)
    out: list[Problem] = []
    for err in validator.iter_errors(data):
        path = tuple(err.absolute_path)
        note = _note(schema, err.absolute_schema_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = tuple(sorted(err.schema.get("properties", {})))
            for key in sorted(set(err.instance) - set(allowed)):
                out.append(Problem((*path, key), "unknown key", allowed, note))
            continue
        if err.validator == "required" and isinstance(err.validator_value, list):
            missing = [k for k in err.validator_value if isinstance(err.instance, dict) and k not in err.instance]
            for key in missing:
                out.append(Problem((*path, key), "required, not given", None, note))
            continue
        out.append(Problem(path, err.message, None, note))
    out.sort(key=_problem_order)
    return out


def _problem_order(p: Problem) -> tuple[Any, ...]:
    return tuple(map(str, p.path)), p.message, p.note


def _note(schema: Mapping[str, Any], schema_path: Any) -> str:
    note, node = "", schema
    for part in schema_path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, Mapping) and NOTE_KEY in node:
            note = str(node[NOTE_KEY])
    return note


def apply_defaults(schema: Mapping[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with every missing property that has a default filled in (tables recursively)."""
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


def check_options(label: str, schema: Mapping[str, Any], options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stage's ``options`` checked against its options schema, with defaults filled in.

    Raises ``ValueError`` starting with ``label`` and naming each problem:
    ``x11: unknown option 'bogus' (known: converter, display, monitor, pixel_format)``.
    """
    # checked with its defaults filled in: a rule across fields sees the value a reader gets
    values = apply_defaults(schema, dict(options or {}))
    found = problems(schema, values)
    if found:
        raise ValueError("; ".join(dict.fromkeys(_option_line(label, p) for p in found)))
    return values


def _option_line(label: str, p: Problem) -> str:
    key = ".".join(map(str, p.path))
    note = f" ({p.note})" if p.note else ""
    if p.unknown and len(p.path) == 1:
        return f"{label}: unknown option {key!r} (known: {', '.join(p.allowed or ()) or 'none'}){note}"
    return f"{label}: option {key!r}: {p.message}{note}"


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` saying why, unless ``schema`` is a JSON Schema (2020-12) of an object."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a JSON Schema: {exc.message}") from None
    if schema.get("type") != "object":
        raise ValueError('an options schema must say "type": "object"')
