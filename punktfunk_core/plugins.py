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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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


#: hooks that fill the host's registries: one that fails stops the start (see PluginManager.call_each)
REGISTERING_HOOKS = frozenset({"register_stages", "register_protocols", "config_schema", "ipc_commands"})


@dataclass(frozen=True, slots=True)
class HookFailure:
    """One plugin's hook implementation raised."""

    plugin: str
    hook: str
    error: Exception

    def __str__(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


class PluginHookError(RuntimeError):
    """A registering hook of a plugin failed; the message names the plugin."""

    def __init__(self, plugin: str, hook: str, error: Exception) -> None:
        super().__init__(f"plugin {plugin!r}: {hook} failed: {error}")
        self.plugin = plugin
        self.hook = hook
        self.error = error


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
        self._caller_cache: dict[str, list[tuple[str, Any]]] = {}
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
                log.warning("plugin module %s (PUNKTFUNK_PLUGINS) failed to load and is skipped: %s",
                            modname, info.error)
                continue
            self.register(module, modname, distribution="(PUNKTFUNK_PLUGINS)")

    def register(self, plugin: Any, name: str, *, distribution: str = "", version: str = "") -> None:
        """Register a plugin object or module directly (tests, embedding)."""
        self.pm.register(plugin, name=name)
        self._caller_cache.clear()
        hooks = sorted(h.name for h in (self.pm.get_hookcallers(plugin) or []))
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.infos[name] = PluginInfo(name, distribution or "-", version or "-", module, hooks)

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self._caller_cache.clear()
        self.infos.pop(name, None)

    # -- calling hooks -------------------------------------------------------
    def call_each(self, hook_name: str, kwargs: dict[str, Any] | Callable[[str], dict[str, Any]] | None = None,
                  ) -> list[HookFailure]:
        """Call ``hook_name`` of every plugin that implements it, one plugin at a
        time in load order, through ``pm.hook`` (tracing sees every call).

        ``kwargs`` are the hook's arguments, or a function of the plugin's name
        that returns them (so a registry knows who is registering). The one
        failure policy of the host: an implementation that raises is logged
        naming its plugin and the hook, and the other plugins still run; the
        failures are returned. A hook that fills the host's registries
        (:data:`REGISTERING_HOOKS`) stops there with :class:`PluginHookError`
        instead: a host with half its stages or commands would fail later and
        less clearly.
        """
        failures: list[HookFailure] = []
        for plugin_name, caller in self._callers(hook_name):
            args = kwargs(plugin_name) if callable(kwargs) else (kwargs or {})
            try:
                caller(**args)
            except Exception as exc:  # noqa: BLE001 - attributed below, never lost
                if hook_name in REGISTERING_HOOKS:
                    raise PluginHookError(plugin_name, hook_name, exc) from exc
                failures.append(HookFailure(plugin_name, hook_name, exc))
                log.error("plugin %s: hook %s failed: %s: %s", plugin_name, hook_name, type(exc).__name__, exc,
                          exc_info=exc)
        return failures

    def _callers(self, hook_name: str) -> list[tuple[str, Any]]:
        """(plugin name, a hook caller for that plugin alone) in load order.

        Built once per hook and kept until a plugin is (un)registered: the
        ``stats_window`` hook goes through here once per window of each session.
        """
        callers = self._caller_cache.get(hook_name)
        if callers is None:
            hook = getattr(self.hook, hook_name)
            impls = list(reversed(hook.get_hookimpls()))  # pluggy keeps them last-registered first
            plain = [i for i in impls if not (i.hookwrapper or i.wrapper)]
            callers = []
            for impl in plain:  # a wrapper stays in every subset: it wraps each plugin's call
                others = [i.plugin for i in plain if i is not impl]
                callers.append((impl.plugin_name, self.pm.subset_hook_caller(hook_name, others)))
            self._caller_cache[hook_name] = callers
        return callers

    # -- registries ----------------------------------------------------------
    def build_registries(self) -> None:
        """Run ``register_stages`` and ``register_protocols`` over all plugins.

        Raises :class:`PluginHookError` naming the plugin (and, for a clash,
        :class:`DuplicateStageError`'s message names both) when one fails.
        """
        self.stages = StageRegistry()
        self.protocols = ProtocolRegistry()
        for hook_name, registry in (("register_stages", self.stages), ("register_protocols", self.protocols)):

            def args_for(plugin: str, registry: Any = registry) -> dict[str, Any]:
                registry.current_plugin = plugin  # the registry names the plugin in its errors
                return {"registry": registry}

            try:
                self.call_each(hook_name, args_for)
            finally:
                registry.current_plugin = "?"

    def collect_named(self, hook_name: str, **kwargs: Any) -> dict[str, tuple[Any, str]]:
        """Call a ``register(name, value)`` style hook; return {name: (value, plugin)}.

        A name registered twice raises an error naming both plugins.
        """
        out: dict[str, tuple[Any, str]] = {}

        def args_for(plugin: str) -> dict[str, Any]:
            def register(name: str, value: Any, *_a: Any) -> None:
                if name in out:
                    raise DuplicateStageError(
                        f"{hook_name}: {name!r} is registered by both plugin {out[name][1]!r} and plugin {plugin!r}"
                    )
                out[name] = (value, plugin)

            return dict(kwargs, register=register)

        self.call_each(hook_name, args_for)
        return out

    # -- tracing -------------------------------------------------------------
    def enable_tracing(self) -> None:
        tlog = logging.getLogger("punktfunk.trace")

        def before(hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
            names = ",".join(i.plugin_name for i in hook_impls)
            tlog.info("hook %s(%s) -> [%s]", hook_name, ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items()), names)

        def after(outcome: pluggy.Result[Any], hook_name: str, hook_impls: Sequence[pluggy.HookImpl],
                  kwargs: Mapping[str, Any]) -> None:
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
