"""Entry point of the console plugin (``punktfunk_webui.plugin``, entry point ``console``).

The web console is a plugin like the others: this module contributes its
config section ``console``, the companion that ``punktfunk serve`` starts
beside the host (gunicorn, see :mod:`punktfunk_webui.server`) with the serve
options ``--console-workers``, ``--console-port`` and ``--no-console``, and the
command ``punktfunk console`` that runs it alone against a running host. The
core imports nothing of it.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from punktfunk_core import config as configmod
from punktfunk_core import configfile, hookimpl
from punktfunk_core.cli import EXIT_CONFIG, STOP_SIGNALS, setup_logging, stop_on_signals
from punktfunk_core.companion import Companion
from punktfunk_core.paths import Paths
from punktfunk_core.settings import Settings, setting

SECTION = "console"

@dataclass(frozen=True, kw_only=True)
class ConsoleSettings(Settings):
    """The web console (gunicorn + Flask)."""

    enabled: bool = setting(True)
    bind: str = setting("127.0.0.1")
    port: int = setting(47990, minimum=0, maximum=65535)
    workers: int = setting(2, minimum=1, maximum=64)
    allow_remote_admin: bool = setting(False, "accept the admin token from non-loopback addresses")
    allowed_hosts: tuple[str, ...] = setting(
        (), "names the console answers to besides localhost, loopback addresses and its bind address "
            "(requests naming any other Host are refused: DNS rebinding)",
        maxItems=64, items={"pattern": r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[?[0-9A-Fa-f:.]+\]?)$"})


SCHEMA: dict[str, Any] = ConsoleSettings.schema()


class _Running:
    def __init__(self, handle: Any, paths: Paths) -> None:
        self.handle = handle
        self.paths = paths

    def describe(self) -> str:
        return f"punktfunk console: {self.handle.url}  (admin token in {self.paths.mgmt_token})"

    def stop(self) -> Any:
        return self.handle.stop()


class ConsoleCompanion(Companion):
    """The console under gunicorn, started by ``punktfunk serve`` once the host answers."""

    name = SECTION

    def add_serve_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--console-workers", type=int, metavar="N",
                            help="gunicorn workers for the console (default 2)")
        parser.add_argument("--console-port", type=int, metavar="PORT", help="console port (default 47990)")
        parser.add_argument("--no-console", action="store_true", help="do not start the web console")

    def configure(self, config: dict[str, Any], args: argparse.Namespace) -> None:
        section = config[SECTION]
        if args.console_workers is not None:
            section["workers"] = args.console_workers
        if args.console_port is not None:
            section["port"] = args.console_port
        if args.no_console:
            section["enabled"] = False

    def problem(self, config: dict[str, Any], paths: Paths) -> str | None:
        from punktfunk_webui.auth import admin_token_problem

        return admin_token_problem(paths.config)  # the console refuses short admin tokens: say so first

    def start(self, config: dict[str, Any], paths: Paths) -> _Running:
        from punktfunk_webui.server import start_console

        return _Running(start_console(config, paths), paths)


@hookimpl
def config_schema(register: Callable[[str, dict[str, Any]], None]) -> None:
    register(SECTION, SCHEMA)


@hookimpl
def serve_companions(register: Callable[..., None]) -> None:
    register(SECTION, ConsoleCompanion())


def _cmd_console(args: argparse.Namespace) -> int:
    """The console alone, in the foreground, against a running host."""
    from punktfunk_webui.server import ConsoleError

    path = configfile.resolve(args.config)
    cfg = configmod.load(path, args.pm)
    if args.workers is not None:
        cfg[SECTION]["workers"] = args.workers
    if args.port is not None:
        cfg[SECTION]["port"] = args.port
    companion = ConsoleCompanion()
    problem = companion.problem(cfg, Paths.from_env())
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(cfg["host"]["log_level"])
    paths = Paths.from_env().ensure()
    stop = stop_on_signals((*STOP_SIGNALS, signal.SIGHUP))  # SIGHUP: the terminal closed
    try:
        running = companion.start(cfg, paths)
    except (ConsoleError, ValueError) as exc:  # ValueError: the admin token changed under us
        print(f"punktfunk: {exc}", file=sys.stderr)
        return 1
    print(running.describe(), flush=True)
    print(f"punktfunk {configfile.describe(path)}", flush=True)
    while not stop.wait(0.5):
        if not running.handle.alive():
            print(f"punktfunk: the console exited with status {running.handle.proc.returncode}", file=sys.stderr)
            return 1
    running.stop()
    return 0


@hookimpl
def cli_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("console", help="run the web console alone against a running host")
    p.add_argument("-c", "--config", metavar="FILE", help="TOML config file (default: as serve)")
    p.add_argument("--workers", type=int, metavar="N")
    p.add_argument("--port", type=int, metavar="PORT")
    p.set_defaults(func=_cmd_console)


@hookimpl
def listening_ports(config: dict[str, Any], register: Callable[..., None]) -> None:
    """The console's port, for doctor's busy check (admins reach it, not streaming clients)."""
    from punktfunk_core.doctor import Port

    section = config.get(SECTION, {})
    if section.get("enabled") and section.get("port"):
        register(Port(SECTION, "console", "tcp", str(section.get("bind", "127.0.0.1")), int(section["port"]),
                      clients=False))
