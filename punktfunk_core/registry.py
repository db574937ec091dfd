"""Registries that plugins fill through hooks: stages by (kind, name), protocols."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from punktfunk_core.settings import check_options, check_schema
from punktfunk_core.stages import STAGE_KINDS, Stage, StreamSpec


class DuplicateStageError(RuntimeError):
    """Two plugins registered the same (kind, name) or protocol name."""


class UnknownStageError(LookupError):
    pass


#: a stage's availability probe: ``available(codec)`` is "" when the stage can run
#: here (for ``codec``, which is None when asked in general), else the reason why not
Probe = Callable[[str | None], str]


@dataclass(frozen=True, slots=True)
class StageEntry:
    kind: str
    name: str
    factory: Callable[[StreamSpec, dict[str, Any]], Stage]
    plugin: str
    #: optional probe, always called as ``available(codec)`` (see :data:`Probe`)
    available: Probe | None = None
    description: str = ""
    #: JSON Schema of the options dict the factory takes; None: the stage checks them itself
    options_schema: dict[str, Any] | None = None
    #: chosen when a session names no stage of its kind: the highest priority that is
    #: available wins (None: never chosen by itself, e.g. a protocol's own packetizer)
    priority: int | None = None
    #: the codecs an encoder encodes (empty: any, or not an encoder)
    codecs: tuple[str, ...] = ()

    def reason_unavailable(self, codec: str | None = None) -> str:
        """"" when the stage can run here (for ``codec``), else why not."""
        if codec is not None and self.codecs and codec not in self.codecs:
            return f"encodes {', '.join(self.codecs)} only"
        return self.available(codec) if self.available is not None else ""


class StageRegistry:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], StageEntry] = {}
        #: set by the plugin manager around each plugin's register_stages call
        self.current_plugin: str = "?"

    def add(
        self,
        kind: str,
        name: str,
        factory: Callable[[StreamSpec, dict[str, Any]], Stage],
        *,
        available: Probe | None = None,
        description: str = "",
        options_schema: dict[str, Any] | None = None,
        priority: int | None = None,
        codecs: tuple[str, ...] | list[str] = (),
    ) -> None:
        """Register ``factory(spec, options) -> Stage`` as stage (kind, name).

        ``options_schema`` (a JSON Schema object, e.g. ``MyOptions.schema()`` of a
        :class:`punktfunk_core.settings.Settings` class) is what the factory's
        options are checked against before it is called, with defaults filled in;
        ``punktfunk config check`` checks ``stream.capture_options`` and
        ``stream.encoder_options`` against it too. ``available(codec)`` says
        whether the stage can run here; ``priority`` makes it a choice when a
        session names no stage of its kind (the encoder of ``stream.encoder =
        "auto"``, the loopback's packetizer and sender); ``codecs`` are the
        codecs an encoder encodes.
        """
        if kind not in STAGE_KINDS:
            raise ValueError(f"plugin {self.current_plugin!r}: unknown stage kind {kind!r} "
                             f"(one of {', '.join(STAGE_KINDS)})")
        if not name or not isinstance(name, str):
            raise ValueError(f"plugin {self.current_plugin!r}: stage name must be a non-empty string")
        if available is not None and not _takes_one_argument(available):
            raise ValueError(f"plugin {self.current_plugin!r}: {kind} stage {name!r}: available must take one "
                             "argument, available(codec) with codec None when asked in general")
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise ValueError(f"plugin {self.current_plugin!r}: {kind} stage {name!r}: priority must be an integer")
        key = (kind, name)
        if key in self._entries:
            other = self._entries[key].plugin
            raise DuplicateStageError(
                f"{kind} stage {name!r} is registered by both plugin {other!r} and plugin {self.current_plugin!r}"
            )
        if options_schema is not None:
            try:
                check_schema(options_schema)
            except ValueError as exc:
                raise ValueError(f"plugin {self.current_plugin!r}: options schema of {kind} stage {name!r}: "
                                 f"{exc}") from None
        self._entries[key] = StageEntry(kind, name, factory, self.current_plugin, available, description,
                                        options_schema, priority, tuple(codecs))

    def get(self, kind: str, name: str) -> StageEntry:
        try:
            return self._entries[(kind, name)]
        except KeyError:
            names = ", ".join(sorted(n for k, n in self._entries if k == kind)) or "none"
            raise UnknownStageError(f"no {kind} stage named {name!r} (available: {names})") from None

    def create(self, kind: str, name: str, spec: StreamSpec, options: Mapping[str, Any] | None = None) -> Stage:
        entry = self.get(kind, name)
        opts = dict(options or {})
        if entry.options_schema is not None:
            opts = check_options(name, entry.options_schema, opts)
        stage = entry.factory(spec, opts)
        if not stage.name:
            stage.name = name
        return stage

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self._entries if k == kind)

    def candidates(self, kind: str, codec: str | None = None) -> list[StageEntry]:
        """The stages of ``kind`` that may be chosen when none is named, first choice
        first: those with a priority (and, for ``codec``, those that encode it)."""
        return sorted((e for e in self._entries.values()
                       if e.kind == kind and e.priority is not None and (codec is None or not e.codecs
                                                                          or codec in e.codecs)),
                      key=lambda e: (-(e.priority or 0), e.name))

    def choose(self, kind: str, codec: str | None = None) -> StageEntry:
        """The stage of ``kind`` to use when none is named: the first of
        :meth:`candidates` that is available here. Raises
        :class:`UnknownStageError` listing why none is."""
        reasons = []
        for entry in self.candidates(kind, codec):
            reason = entry.reason_unavailable(codec)
            if not reason:
                return entry
            reasons.append(f"{entry.name}: {reason}")
        what = f"{kind} stage" + (f" for {codec}" if codec else "")
        raise UnknownStageError(f"no {what} is available here" + (f" ({'; '.join(reasons)})" if reasons else ""))

    def codecs(self, kind: str = "encoder") -> set[str]:
        """Every codec the registered stages of ``kind`` declare (available or not)."""
        return {c for e in self._entries.values() if e.kind == kind for c in e.codecs}

    def entries(self) -> list[StageEntry]:
        return sorted(self._entries.values(), key=lambda e: (e.kind, e.name))

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._entries


class ProtocolRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, tuple[Callable[[Any], Any], str]] = {}
        self.current_plugin: str = "?"

    def add(self, name: str, factory: Callable[[Any], Any]) -> None:
        """Register ``factory(host) -> ProtocolPlane`` under ``name`` (its config section)."""
        if name in self._factories:
            raise DuplicateStageError(
                f"protocol {name!r} is registered by both plugin {self._factories[name][1]!r} "
                f"and plugin {self.current_plugin!r}"
            )
        self._factories[name] = (factory, self.current_plugin)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def factory(self, name: str) -> Callable[[Any], Any]:
        return self._factories[name][0]

    def plugin_of(self, name: str) -> str:
        return self._factories[name][1]


def _takes_one_argument(fn: Callable[..., Any]) -> bool:
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        return False
    except ValueError:  # no signature to read (some builtins): trust it
        return True
    return True
