"""Plugin manager: entry-point loading, allow/block lists, tracing, registries.

Builtin plugins are found through the same ``punktfunk.plugins`` entry-point
group as third-party ones; nothing is special-cased here.

Environment:
  PUNKTFUNK_LOAD_PLUGINS     comma-separated allow-list of plugin names
  PUNKTFUNK_DISABLE_PLUGINS  comma-separated block-list
  PUNKTFUNK_TRACE_PLUGINS=1  log every hook call with its arguments and result
  PUNKTFUNK_PLUGINS          comma-separated importable modules to load as
                             plugins in addition to the entry points (like
                             pytest's -p; handy for local and test plugins)
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from punktfunk_core import hookspecs
from punktfunk_core.registry import DuplicateStageError, ProtocolRegistry, StageRegistry

log = logging.getLogger("punktfunk.plugins")

ENTRY_POINT_GROUP = "punktfunk.plugins"


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


@dataclass(slots=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    error: str = ""  # set when the plugin failed to load


class PluginManager:
    """pluggy's PluginManager plus punktfunk's registries and load report."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.hook = self.pm.hook
        self.infos: dict[str, PluginInfo] = {}
        self.failed: list[PluginInfo] = []
        self.stages = StageRegistry()
        self.protocols = ProtocolRegistry()
        self._undo_trace: Callable[[], None] | None = None
        if os.environ.get("PUNKTFUNK_TRACE_PLUGINS", "") not in ("", "0"):
            self.enable_tracing()

    # -- loading -------------------------------------------------------------
    def load_entrypoints(self) -> None:
        """Load every plugin of the entry-point group that the lists allow.

        A plugin that fails to import is logged and recorded in ``failed``;
        the others load normally.
        """
        allow = _env_list("PUNKTFUNK_LOAD_PLUGINS")
        block = _env_list("PUNKTFUNK_DISABLE_PLUGINS") or set()
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if allow is not None and ep.name not in allow:
                log.debug("plugin %s not in PUNKTFUNK_LOAD_PLUGINS; skipped", ep.name)
                continue
            if ep.name in block:
                log.info("plugin %s disabled by PUNKTFUNK_DISABLE_PLUGINS", ep.name)
                continue
            if self.pm.has_plugin(ep.name):
                continue
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is reported, not fatal
                info = PluginInfo(ep.name, dist, version, ep.value, error=f"{type(exc).__name__}: {exc}")
                self.failed.append(info)
                log.warning("plugin %s (%s) failed to load and is skipped: %s", ep.name, ep.value, info.error)
                continue
            self.register(module, ep.name, distribution=dist, version=version)
        for modname in sorted(_env_list("PUNKTFUNK_PLUGINS") or ()):
            if modname in block or self.pm.has_plugin(modname):
                continue
            try:
                module = importlib.import_module(modname)
            except Exception as exc:  # noqa: BLE001
                info = PluginInfo(modname, "-", "-", modname, error=f"{type(exc).__name__}: {exc}")
                self.failed.append(info)
                log.warning("plugin module %s (PUNKTFUNK_PLUGINS) failed to load and is skipped: %s", modname, info.error)
                continue
            self.register(module, modname, distribution="(PUNKTFUNK_PLUGINS)")

    def register(self, plugin: Any, name: str, *, distribution: str = "", version: str = "") -> None:
        """Register a plugin object or module directly (tests, embedding)."""
        self.pm.register(plugin, name=name)
        hooks = sorted(h.name for h in (self.pm.get_hookcallers(plugin) or []))
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.infos[name] = PluginInfo(name, distribution or "-", version or "-", module, hooks)

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.infos.pop(name, None)

    # -- registries ----------------------------------------------------------
    def _call_per_plugin(self, hook_name: str, target: Any, **kwargs: Any) -> None:
        """Call a registration hook one plugin at a time so that the registry
        knows which plugin is registering (for duplicate-name errors)."""
        caller = getattr(self.hook, hook_name)
        impls = list(reversed(caller.get_hookimpls()))
        if self._undo_trace is not None:
            logging.getLogger("punktfunk.trace").info(
                "hook %s(registry) -> [%s]", hook_name, ",".join(i.plugin_name for i in impls))
        for impl in impls:
            target.current_plugin = impl.plugin_name
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            finally:
                target.current_plugin = "?"

    def build_registries(self) -> None:
        """Run ``register_stages`` and ``register_protocols`` over all plugins.

        Raises :class:`DuplicateStageError` naming both plugins on a clash.
        """
        self.stages = StageRegistry()
        self.protocols = ProtocolRegistry()
        self._call_per_plugin("register_stages", self.stages, registry=self.stages)
        self._call_per_plugin("register_protocols", self.protocols, registry=self.protocols)

    def collect_named(self, hook_name: str, **kwargs: Any) -> dict[str, tuple[Any, str]]:
        """Call a ``register(name, value)`` style hook; return {name: (value, plugin)}.

        A name registered twice raises an error naming both plugins.
        """
        out: dict[str, tuple[Any, str]] = {}
        caller = getattr(self.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            plugin = impl.plugin_name

            def register(name: str, value: Any, *_a: Any, _plugin: str = plugin) -> None:
                if name in out:
                    raise DuplicateStageError(
                        f"{hook_name}: {name!r} is registered by both plugin {out[name][1]!r} and plugin {_plugin!r}"
                    )
                out[name] = (value, _plugin)

            args = dict(kwargs, register=register)
            if self._undo_trace is not None:
                logging.getLogger("punktfunk.trace").info("hook %s -> [%s]", hook_name, plugin)
            impl.function(**{k: args[k] for k in impl.argnames})
        return out

    # -- tracing -------------------------------------------------------------
    def enable_tracing(self) -> None:
        tlog = logging.getLogger("punktfunk.trace")

        def before(hook_name: str, hook_impls: list, kwargs: dict) -> None:
            names = ",".join(i.plugin_name for i in hook_impls)
            tlog.info("hook %s(%s) -> [%s]", hook_name, ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items()), names)

        def after(outcome: Any, hook_name: str, hook_impls: list, kwargs: dict) -> None:
            try:
                result = outcome.get_result()
            except BaseException as exc:  # noqa: BLE001 - reported, re-raised by pluggy
                tlog.info("hook %s raised %r", hook_name, exc)
                return
            tlog.info("hook %s returned %s", hook_name, _short(result))

        self._undo_trace = self.pm.add_hookcall_monitoring(before, after)

    def plugin_table(self) -> list[PluginInfo]:
        return sorted(self.infos.values(), key=lambda i: i.name) + self.failed


def _short(v: Any, limit: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def load_plugin_manager(extra: list[tuple[Any, str]] | None = None) -> PluginManager:
    """The standard way to get a ready PluginManager: entry points, then
    ``extra`` (object, name) pairs, then the stage/protocol registries."""
    manager = PluginManager()
    manager.load_entrypoints()
    for obj, name in extra or []:
        manager.register(obj, name)
    manager.build_registries()
    return manager
