"""Reloading a running host's config file (SIGHUP, ``punktfunk config reload``, the console).

A reload re-reads the file the host was started with (``-c FILE``, else the
default ``host.toml``, else the built-in defaults), validates it exactly as
``punktfunk config check`` does and compares it with the running config
(``config.changes``). Each changed key is

- **applied** when its setting is declared ``live`` (``setting(..., live=LIVE_NOW)``
  takes effect at once, ``LIVE_NEW_SESSIONS`` for sessions that start after it);
- **needs_restart** otherwise (ports, bind addresses, enabled protocols …): the
  running config keeps the old value, so what the host reports stays what it does;
- and a file that does not pass the check is **refused** as a whole, one line per
  problem, and the running config stays.

The host takes the new config in one assignment (``host.config``, then the typed
``host.settings``); then the core applies what it holds outside them (log level,
the apps list, running sessions' input switches) and the ``config_changed`` hook
lets each plugin apply its own, returning the keys it could not.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from punktfunk_core import config as configmod
from punktfunk_core import configfile, inputsink
from punktfunk_core.settings import LIVE_KEY, LIVE_NEW_SESSIONS

if TYPE_CHECKING:
    from punktfunk_core.host import Host

log = logging.getLogger("punktfunk.reload")

#: ``config.changes`` names a changed list section (``[[apps]]``) so
_WHOLE = "(whole section)"


def _name(section: str, key: str) -> str:
    return section if key == _WHOLE else f"{section}.{key}"


def live_of(schema: Mapping[str, Any], section: str, key: str) -> str | None:
    """When a change of ``section.key`` takes effect (None: after a restart)."""
    sect = schema.get("properties", {}).get(section, {})
    prop = sect if key == _WHOLE else sect.get("properties", {}).get(key, {})
    when = prop.get(LIVE_KEY)
    return when if isinstance(when, str) else None


def reload_config(host: Host) -> dict[str, Any]:
    """Reload the host's config file; the answer ``{file, applied, needs_restart, refused, notes}``."""
    with host.reload_lock:
        path = configfile.resolve(host.config_request, host.paths)
        source = path or configfile.DEFAULTS
        try:
            new = configmod.load(path, host.pm, pipes=False)  # a FIFO there must not hold the IPC thread
        except configmod.ConfigError as exc:
            refused = [f"{exc.source}: {p}" for p in exc.problems]
            log.error("config reload of %s refused; the running config stays", source)
            for line in refused:  # one log line per problem, as `config check` prints them
                log.error("%s", line)
            return {"file": source, "applied": [], "needs_restart": [], "refused": refused, "notes": {}}
        configfile.apply_overrides(new, host.config_overrides)
        old = host.config
        schema = configmod.build_schema(host.pm)
        live: dict[str, list[str]] = {}
        applied: list[str] = []
        needs_restart: list[str] = []
        notes: dict[str, str] = {}
        effective = copy.deepcopy(new)
        for section, keys in configmod.changes(old, new).items():
            for key in keys:
                when = live_of(schema, section, key)
                if when:
                    live.setdefault(section, []).append(key)
                    applied.append(_name(section, key))
                    if when == LIVE_NEW_SESSIONS:
                        notes[_name(section, key)] = "applies to new sessions"
                    continue
                needs_restart.append(_name(section, key))
                # the running config keeps what the host really runs with
                if key == _WHOLE:
                    effective[section] = copy.deepcopy(old.get(section))
                elif key in old.get(section, {}):
                    effective[section][key] = copy.deepcopy(old[section][key])
                else:
                    effective[section].pop(key, None)
        host.take_config(effective)
        host.config_source = path
        not_applied = _apply_core(host, live)
        try:
            for keys in host.pm.hook.config_changed(host=host, old=old, new=effective, changes=live):
                not_applied += list(keys or ())
        except Exception as exc:  # noqa: BLE001 - a plugin failing here must not take the host down
            log.exception("config_changed hook failed")
            not_applied.append(f"(a plugin failed to apply the reload: {exc})")
        for name in not_applied:
            if name in applied:
                applied.remove(name)
                notes.pop(name, None)
            needs_restart.append(name)
        answer = {"file": source, "applied": applied, "needs_restart": needs_restart, "refused": [], "notes": notes}
        log.info("config reloaded from %s: %s", source, summary(answer))
        return answer


def _apply_core(host: Host, live: Mapping[str, list[str]]) -> list[str]:
    """What the core holds outside ``host.config``/``host.settings``; returns what it could not apply."""
    if "log_level" in live.get("host", ()):
        logging.getLogger().setLevel(host.settings.host.log_level.upper())
    if "apps" in live:
        host.apps.replace_apps(host.settings.apps)
    if "input" in live:
        sinks = inputsink.apply_class_switches(host.settings.input)
        if sinks:
            log.info("input switches given to %d running session(s)", sinks)
    return []


def summary(answer: Mapping[str, Any]) -> str:
    """The answer in one line (the log, and the last line of ``punktfunk config reload``)."""
    if answer["refused"]:
        return f"refused ({len(answer['refused'])} problem(s)); the running config stays"
    notes = answer.get("notes", {})
    applied = [f"{k} ({notes[k]})" if k in notes else k for k in answer["applied"]]
    parts = [f"applied: {', '.join(applied) or 'nothing changed'}"]
    if answer["needs_restart"]:
        parts.append(f"needs a restart: {', '.join(answer['needs_restart'])}")
    return "; ".join(parts)


def cmd_config_reload(args: argparse.Namespace) -> int:
    """Exits like ``config check``: 2 when the file was refused."""
    from punktfunk_core.cli import EXIT_CONFIG
    from punktfunk_core.ipc import connect

    answer = connect().call("config.reload")  # no host: main() prints the IpcError, exit 1
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        for line in answer["refused"]:
            print(line, file=sys.stderr)
        print(f"{answer['file']}: {summary(answer)}")
    return EXIT_CONFIG if answer["refused"] else 0


def add_reload_command(csub: Any) -> None:
    c = csub.add_parser("reload", help="make the running host re-read its config file (as SIGHUP does)")
    c.add_argument("--json", action="store_true", help="print the answer as JSON")
    c.set_defaults(func=cmd_config_reload)
