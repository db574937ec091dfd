"""The ``punktfunk`` command line. Plugins add sub-commands through ``cli_commands``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import textwrap
import threading
import time
from typing import Any

from punktfunk_core import __version__, configfile, reload
from punktfunk_core import config as configmod
from punktfunk_core.ipc import IpcClient, IpcError
from punktfunk_core.paths import Paths
from punktfunk_core.plugins import PluginManager, load_plugin_manager

log = logging.getLogger("punktfunk")

EXIT_CONFIG = 2
#: signals on which `serve` and `console` stop everything they started
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: `serve` reloads its config file on SIGHUP; `console` (no host config to reload) stops on it
RELOAD_SIGNAL = signal.SIGHUP


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def ipc_client(timeout: float = 2.0) -> IpcClient:
    """An IPC client for the host of this user (PUNKTFUNK_IPC overrides the endpoint)."""
    endpoint = os.environ.get("PUNKTFUNK_IPC") or Paths.from_env().ipc_endpoint
    return IpcClient(endpoint, timeout=timeout)


def call_host(cmd: str, **args: Any) -> Any:
    """Call a host IPC command from a CLI command; prints the error and exits 1 on failure."""
    try:
        return ipc_client().call(cmd, **args)
    except IpcError as exc:
        print(f"punktfunk: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None


def _load_config_or_exit(path: str | None, pm: PluginManager) -> dict[str, Any]:
    try:
        cfg = configmod.load(path, pm)
    except configmod.ConfigError as exc:
        for p in exc.problems:
            print(f"{exc.source}: {p}" if exc.source != "defaults" else p, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    return cfg


def _check_admin_token_or_exit() -> None:
    """The console refuses short admin tokens; say so before anything starts."""
    from punktfunk_webui.auth import admin_token_problem

    problem = admin_token_problem(Paths.from_env().config)
    if problem:
        print(problem, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


def _on_signals(signals: tuple[signal.Signals, ...]) -> threading.Event:
    """An event set by any of ``signals`` (instead of dying half-way)."""
    event = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        event.set()

    for sig in signals:
        signal.signal(sig, on_signal)
    return event


# -- built-in commands -------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from punktfunk_core.host import Host

    pm: PluginManager = args.pm
    path = configfile.resolve(args.config)
    cfg = _load_config_or_exit(path, pm)
    overrides: dict[tuple[str, str], Any] = {}
    if args.gamestream:
        overrides["gamestream", "enabled"] = True
    if args.console_workers is not None:
        overrides["console", "workers"] = args.console_workers
    if args.console_port is not None:
        overrides["console", "port"] = args.console_port
    if args.no_console:
        overrides["console", "enabled"] = False
    if args.verbose:
        overrides["host", "log_level"] = "debug"
    configfile.apply_overrides(cfg, overrides)
    if cfg["console"]["enabled"]:
        _check_admin_token_or_exit()
    print(f"punktfunk {configfile.describe(path)}", flush=True)
    setup_logging(cfg["host"]["log_level"])
    for info in pm.failed:
        log.warning("plugin %s failed to load: %s", info.name, info.error)
    paths = Paths.from_env().ensure()
    host = Host(cfg, pm, paths)
    host.config_request, host.config_source, host.config_overrides = args.config, path, overrides
    stop = _on_signals(STOP_SIGNALS)
    reload_requested = _on_signals((RELOAD_SIGNAL,))
    try:
        host.start()
    except Exception as exc:  # noqa: BLE001
        log.error("host failed to start: %s", exc)
        host.stop()
        return 1
    console = None
    console_error = ""
    if cfg["console"]["enabled"]:
        try:
            from punktfunk_webui.server import start_console

            console = start_console(cfg, paths)
            print(f"punktfunk console: {console.url}  (admin token in {paths.mgmt_token})", flush=True)
        except Exception as exc:  # noqa: BLE001 - the host streams without a console
            console_error = str(exc)
            log.error("console failed to start: %s", exc)
    nothing = _nothing_started(cfg, pm, host, console, console_error)
    if nothing:
        print(f"punktfunk: {nothing}", file=sys.stderr, flush=True)
        host.stop()
        return 1
    print(f"punktfunk host running (IPC {paths.ipc_endpoint}); Ctrl-C stops it", flush=True)
    while not stop.wait(0.5):
        if host.stopped:
            break
        if reload_requested.is_set():
            reload_requested.clear()
            reload.reload_config(host)  # logs what it applied, needs a restart for, or refused
    log.info("stopping")
    if console is not None:
        console.stop()
    host.stop()
    return 0


def _nothing_started(cfg: dict[str, Any], pm: PluginManager, host: Any, console: Any, console_error: str) -> str:
    """When the host was asked for protocols or a console and none of them
    started: one line with each reason (and so what to fix); else ""."""
    asked = [n for n in pm.protocols.names() if configmod.protocol_enabled(cfg, n)]
    if host.planes or console is not None or not (asked or cfg["console"]["enabled"]):
        return ""  # something serves, or only IPC was asked for (--no-console, no protocol)
    reasons = [f"protocol {n}: {host.protocol_errors.get(n, 'did not start')}" for n in asked]
    if cfg["console"]["enabled"]:
        reasons.append(f"console: {console_error}")
    return "nothing could start, so the host stops — " + "; ".join(reasons)


def cmd_plugins(args: argparse.Namespace) -> int:
    pm: PluginManager = args.pm
    rows = pm.plugin_table()
    if args.json:
        print(json.dumps([{"name": i.name, "distribution": i.distribution, "version": i.version,
                           "module": i.module, "hooks": i.hooks, "error": i.error} for i in rows], indent=2))
        return 0
    print(f"{'plugin':<14} {'distribution':<24} {'version':<10} hooks")
    for i in rows:
        hooks = ", ".join(i.hooks) if not i.error else f"FAILED TO LOAD: {i.error}"
        print(f"{i.name:<14} {i.distribution:<24} {i.version:<10} {hooks}")
    print()
    print(f"{'stage kind':<14} {'name':<16} {'plugin':<14} notes")
    for e in pm.stages.entries():
        note = e.description
        if e.available is not None:
            reason = e.available()
            note = (note + "; " if note else "") + ("available" if not reason else f"unavailable: {reason}")
        print(f"{e.kind:<14} {e.name:<16} {e.plugin:<14} {note}")
    if pm.protocols.names():
        print()
        print("protocols: " + ", ".join(f"{n} ({pm.protocols.plugin_of(n)})" for n in pm.protocols.names()))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    path = configfile.resolve(args.file)
    cfg = _load_config_or_exit(path, args.pm)
    if cfg["console"]["enabled"]:  # what `serve` with this file would refuse at start
        _check_admin_token_or_exit()
    print(f"{path or configfile.DEFAULTS}: ok")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(configmod.build_schema(args.pm), indent=2))
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    """The console alone, in the foreground, against a running host."""
    from punktfunk_webui.server import ConsoleError, start_console

    path = configfile.resolve(args.config)
    cfg = _load_config_or_exit(path, args.pm)
    if args.workers is not None:
        cfg["console"]["workers"] = args.workers
    if args.port is not None:
        cfg["console"]["port"] = args.port
    _check_admin_token_or_exit()
    setup_logging(cfg["host"]["log_level"])
    paths = Paths.from_env().ensure()
    stop = _on_signals((*STOP_SIGNALS, signal.SIGHUP))  # SIGHUP: the terminal closed
    try:
        console = start_console(cfg, paths)
    except (ConsoleError, ValueError) as exc:  # ValueError: the admin token changed under us
        print(f"punktfunk: {exc}", file=sys.stderr)
        return 1
    print(f"punktfunk console: {console.url}  (admin token in {paths.mgmt_token})", flush=True)
    print(f"punktfunk {configfile.describe(path)}", flush=True)
    while not stop.wait(0.5):
        if not console.alive():
            print(f"punktfunk: the console exited with status {console.proc.returncode}", file=sys.stderr)
            return 1
    console.stop()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = call_host("host.status")
    sessions = call_host("sessions.list")
    if args.json:
        print(json.dumps({"host": st, "sessions": sessions}, indent=2))
        return 0
    print(f"host {st['hostname']} (pid {st['pid']}, punktfunk {st['version']}), up {st['uptime_ms'] / 1000:.0f} s, "
          f"measuring {'yes' if st['measuring'] else 'no'}")
    print("protocols:" if st["protocols"] else "protocols: none enabled")
    width = max((len(n) for n in st["protocols"]), default=0)
    for name, p in st["protocols"].items():
        words = _fields(p) if isinstance(p, dict) else [str(p)]
        print(textwrap.fill(" ".join(words), 100, initial_indent=f"  {name:<{width}}  ",
                            subsequent_indent=" " * (width + 4), break_on_hyphens=False))
    print(f"sessions: {len(sessions) or 'none'}")
    for s in sessions:
        print(f"  {s['id']:>3}  {s['kind']:<10} {s['client']:<22} {s['width']}x{s['height']}@{s['fps']} {s['codec']} "
              f"via {s['encoder_backend'] or '-'}  {_rate(s, 'fps'):>5} fps  {_rate(s, 'mbps'):>6} Mb/s "
              f"(target {s['bitrate_kbps'] / 1000:.1f})  {s['state']}")
    return 0


def _rate(session: dict[str, Any], what: str) -> str:
    """fps or Mb/s of a session: its last stats window, else its counters over the last seconds."""
    v = session.get(f"{what}_measured")
    if v is None:
        v = session.get(f"{what}_recent")
    return "-" if v is None else f"{v:.1f}"


def _fields(d: dict[str, Any], prefix: str = "") -> list[str]:
    """``key=value`` words for a protocol's status: nested tables as
    ``table.key=value``, lists and large tables by their size, empty values
    left out (``--json`` shows everything)."""
    out: list[str] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and len(value) <= 12:
            out += _fields(value, name + ".")
        elif isinstance(value, (dict, list, tuple)):
            out.append(f"{name}=[{len(value)}]")
        elif value is None or value == "":
            continue
        elif isinstance(value, bool):
            out.append(f"{name}={'yes' if value else 'no'}")
        else:
            out.append(f"{name}={value}")
    return out


def _free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nobody listens on (just released by us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cmd_loopback(args: argparse.Namespace) -> int:
    port = args.port or _free_udp_port()
    req: dict[str, Any] = {"port": port, "seconds": args.seconds}
    for key in ("capture", "encoder", "width", "height", "fps", "codec", "bitrate_kbps"):
        if getattr(args, key) is not None:
            req[key] = getattr(args, key)
    info = call_host("sessions.loopback", **req)
    if not args.json:
        print(f"loopback session {info['id']} → 127.0.0.1:{port}: {info['width']}x{info['height']}@{info['fps']} "
              f"{info['codec']} via {info['encoder_backend']}, "
              + (f"{args.seconds:g} s" if args.seconds > 0 else "until Ctrl-C"), flush=True)
    final = _wait_for_end(info["id"])
    if args.json:
        print(json.dumps(final))
        return 0
    seconds = max(1e-3, final["duration_ms"] / 1000)
    print(f"sent {final.get('frames_sent', 0)} frames"
          + (f" in {final['packets_sent']} datagrams" if "packets_sent" in final else "")
          + f", {final.get('bytes_sent', 0) / 1e6:.2f} MB in {seconds:.1f} s "
          f"({final.get('frames_sent', 0) / seconds:.1f} fps, {final.get('bytes_sent', 0) * 8 / seconds / 1e6:.2f} Mb/s)"
          + (f"; {final['frames_dropped']} frames dropped by the host" if final.get("frames_dropped") else ""))
    refused = final.get("send_dropped") or 0
    if refused:
        note = ("expected: nobody listens on that port, and each ICMP port-unreachable makes the kernel refuse "
                "the next datagram" if not args.port else "is something listening on that port?")
        print(f"{refused} datagrams refused by the kernel ({note})")
    return 0


def _wait_for_end(session_id: int) -> dict[str, Any]:
    """Block until the session ended (Ctrl-C ends it first); its final info."""
    client = ipc_client()
    stopping = False
    while True:
        try:
            info = client.call("sessions.get", id=session_id)
            if info.get("state") == "ended":
                return info
            time.sleep(0.2)
        except KeyboardInterrupt:
            if stopping:
                raise
            stopping = True
            client.call("sessions.stop", id=session_id)
        except IpcError as exc:
            print(f"punktfunk: {exc.message}", file=sys.stderr)
            raise SystemExit(1) from None


def build_parser(pm: PluginManager) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="punktfunk", description="Low-latency game and desktop streaming host.")
    parser.add_argument("--version", action="version", version=f"punktfunk {__version__}")
    parser.set_defaults(pm=pm, func=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the host (and its web console)")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="TOML config file (default: host.toml in the config dir when present, else built-in "
                        "defaults); SIGHUP re-reads it")
    p.add_argument("--gamestream", action="store_true", help="enable GameStream/Moonlight compatibility (opt-in)")
    p.add_argument("--console-workers", type=int, metavar="N", help="gunicorn workers for the console (default 2)")
    p.add_argument("--console-port", type=int, metavar="PORT", help="console port (default 47990)")
    p.add_argument("--no-console", action="store_true", help="do not start the web console")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("plugins", help="list plugins, their hooks and stages")
    p.add_argument("--json", action="store_true", help="print the plugin table as JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("status", help="show the running host and its sessions")
    p.add_argument("--json", action="store_true", help="print host.status and sessions.list as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("config", help="check, write or reload a config file, or print the schema")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser("check", help="validate FILE (default: what serve reads); one line per problem, "
                                      "exit 2 when invalid")
    c.add_argument("file", metavar="FILE", nargs="?")
    c.set_defaults(func=cmd_config_check)
    c = csub.add_parser("schema", help="print the whole JSON Schema (for editors)")
    c.set_defaults(func=cmd_config_schema)
    configfile.add_init_command(csub)
    reload.add_reload_command(csub)

    p = sub.add_parser("console", help="run the web console alone against a running host")
    p.add_argument("-c", "--config", metavar="FILE", help="TOML config file (default: as serve)")
    p.add_argument("--workers", type=int, metavar="N")
    p.add_argument("--port", type=int, metavar="PORT")
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("loopback", help="stream a diagnostic session to a local UDP port (no client needed)",
                       description="Runs capture → encoder → UDP to 127.0.0.1 through the host's real runner, "
                                   "waits until it ends and says what was sent. Without --port it sends to a "
                                   "port nobody listens on: the kernel then refuses some datagrams, as expected.")
    p.add_argument("--port", type=int, help="UDP port on 127.0.0.1 to send to (default: a free port nobody listens on)")
    p.add_argument("--seconds", type=float, default=10.0, help="stop after this long (default 10; 0 = until Ctrl-C)")
    p.add_argument("--capture", help="capture stage (default: stream.capture)")
    p.add_argument("--encoder", help="encoder stage (default: stream.encoder)")
    p.add_argument("--width", type=int, metavar="PX", help="picture width (default: stream.width)")
    p.add_argument("--height", type=int, metavar="PX", help="picture height (default: stream.height)")
    p.add_argument("--fps", type=int, help="frames per second (default: stream.fps)")
    p.add_argument("--codec", choices=["h264", "hevc", "av1"], help="codec (default: stream.codec)")
    p.add_argument("--bitrate-kbps", dest="bitrate_kbps", type=int, metavar="KBPS",
                   help="encoder target bitrate (default: stream.bitrate_kbps)")
    p.add_argument("--json", action="store_true", help="print the session's final counters as JSON")
    p.set_defaults(func=cmd_loopback)

    pm.hook.cli_commands(subparsers=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not logging.getLogger().handlers:
        setup_logging(os.environ.get("PUNKTFUNK_LOG_LEVEL", "warning"))
    try:
        pm = load_plugin_manager()
    except Exception as exc:  # noqa: BLE001 - e.g. two plugins registering one stage name
        print(f"punktfunk: {exc}", file=sys.stderr)
        return 1
    parser = build_parser(pm)
    args = parser.parse_args(argv)
    if args.func is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`punktfunk plugins | head -2`): stop quietly, and keep
        # the interpreter's final flush from failing on the closed pipe too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
