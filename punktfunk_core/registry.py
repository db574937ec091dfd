"""Registries that plugins fill through hooks: stages by (kind, name), protocols."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from punktfunk_core.settings import check_options, check_schema
from punktfunk_core.stages import STAGE_KINDS, Stage, StreamSpec


class DuplicateStageError(RuntimeError):
    """Two plugins registered the same (kind, name) or protocol name."""


class UnknownStageError(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class StageEntry:
    kind: str
    name: str
    factory: Callable[[StreamSpec, dict[str, Any]], Stage]
    plugin: str
    #: optional probe: returns "" when usable here, else the reason it is not
    available: Callable[..., str] | None = None  # () or (codec) -> "" when usable, else why not
    description: str = ""
    #: JSON Schema of the options dict the factory takes; None: the stage checks them itself
    options_schema: dict[str, Any] | None = None


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
        available: Callable[..., str] | None = None,
        description: str = "",
        options_schema: dict[str, Any] | None = None,
    ) -> None:
        """Register ``factory(spec, options) -> Stage`` as stage (kind, name).

        ``options_schema`` (a JSON Schema object, e.g. ``MyOptions.schema()`` of a
        :class:`punktfunk_core.settings.Settings` class) is what the factory's
        options are checked against before it is called, with defaults filled in;
        ``punktfunk config check`` checks ``stream.capture_options`` and
        ``stream.encoder_options`` against it too.
        """
        if kind not in STAGE_KINDS:
            raise ValueError(f"plugin {self.current_plugin!r}: unknown stage kind {kind!r} "
                             f"(one of {', '.join(STAGE_KINDS)})")
        if not name or not isinstance(name, str):
            raise ValueError(f"plugin {self.current_plugin!r}: stage name must be a non-empty string")
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
                                        options_schema)

    def get(self, kind: str, name: str) -> StageEntry:
        try:
            return self._entries[(kind, name)]
        except KeyError:
            names = ", ".join(sorted(n for k, n in self._entries if k == kind)) or "none"
            raise UnknownStageError(f"no {kind} stage named {name!r} (available: {names})") from None

    def create(self, kind: str, name: str, spec: StreamSpec, options: dict[str, Any] | None = None) -> Stage:
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
