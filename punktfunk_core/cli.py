"""The ``punktfunk`` command line. Plugins add sub-commands through ``cli_commands``."""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import signal
import socket
import sys
import textwrap
import time
from typing import Any

from punktfunk_core import __version__, configfile, ipc, logfmt, reload, sdnotify
from punktfunk_core import config as configmod
from punktfunk_core.companion import Companion, RunningCompanion
from punktfunk_core.ipc import IpcClient, IpcError
from punktfunk_core.paths import Paths
from punktfunk_core.plugins import PluginManager, load_plugin_manager

log = logging.getLogger("punktfunk")

EXIT_CONFIG = 2
#: signals on which `serve` (and a companion's own command) stop everything they started
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: `serve` reloads its config file on SIGHUP; a companion's own command (no host config to
#: reload) stops on it, as the terminal closed
RELOAD_SIGNAL = signal.SIGHUP


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[logfmt.stderr_handler()],
                        force=True)


class SignalEvent:
    """A flag a signal handler sets, for the main thread to wait on.

    Not a ``threading.Event``: its ``set()`` takes the lock its ``wait()`` holds
    for a moment, and when the signal lands in the thread that waits, the handler
    blocks on that lock forever (seen: ``serve`` ignoring SIGTERM). Setting a
    plain attribute takes no lock; ``wait`` polls it.
    """

    POLL_S = 0.05

    def __init__(self) -> None:
        self._fired = False

    def set(self) -> None:
        self._fired = True

    def clear(self) -> None:
        self._fired = False

    def is_set(self) -> bool:
        return self._fired

    def wait(self, timeout: float) -> bool:
        """True as soon as it is set, False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self._fired:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, self.POLL_S))
        return True


def stop_on_signals(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> SignalEvent:
    """A flag set by any of ``signals`` (instead of dying half-way)."""
    event = SignalEvent()

    def on_signal(_signum: int, _frame: Any) -> None:
        event.set()

    for sig in signals:
        signal.signal(sig, on_signal)
    return event


def companion_problems(companions: dict[str, Companion], cfg: dict[str, Any], paths: Paths) -> list[str]:
    """What the enabled companions say must be fixed before anything starts."""
    return [p for c in companions.values() if c.enabled(cfg) and (p := c.problem(cfg, paths))]


# -- built-in commands -------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from punktfunk_core.host import Host

    pm: PluginManager = args.pm
    companions: dict[str, Companion] = args.companions
    path = configfile.resolve(args.config)
    cfg = configmod.load(path, pm)
    loaded = copy.deepcopy(cfg)
    for section in args.enable:  # --enable SECTION, and the shorthands plugins add (--gamestream)
        if not isinstance(cfg.get(section), dict) or "enabled" not in cfg[section]:
            print(f"--enable {section}: no plugin has a config section {section!r} that can be enabled",
                  file=sys.stderr)
            return EXIT_CONFIG
        cfg[section]["enabled"] = True
    for companion in companions.values():
        companion.configure(cfg, args)
    if args.verbose:
        cfg["host"]["log_level"] = "debug"
    # what the command line changed stays changed when SIGHUP re-reads the file
    overrides = {(section, key): cfg[section][key]
                 for section, keys in configmod.changes(loaded, cfg).items() for key in keys}
    problems = companion_problems(companions, cfg, Paths.from_env())
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    print(f"punktfunk {configfile.describe(path)}", flush=True)
    setup_logging(cfg["host"]["log_level"])
    for info in pm.failed:
        log.warning("plugin %s failed to load: %s", info.name, info.error)
    notifier = sdnotify.from_env()  # before any child starts: they must not inherit NOTIFY_SOCKET
    paths = Paths.from_env().ensure()
    host = Host(cfg, pm, paths)
    host.config_request, host.config_source, host.config_overrides = args.config, path, overrides
    stop = stop_on_signals()
    reload_requested = stop_on_signals((RELOAD_SIGNAL,))
    try:
        host.start()
    except Exception as exc:  # noqa: BLE001
        log.error("host failed to start: %s", exc)
        host.stop()
        return 1
    running: list[RunningCompanion] = []
    failed: dict[str, str] = {}
    for name, companion in companions.items():
        if not companion.enabled(cfg):
            continue
        try:
            started = companion.start(cfg, paths)
        except Exception as exc:  # noqa: BLE001 - the host streams without it
            failed[name] = str(exc)
            log.error("%s failed to start: %s", name, exc)
            continue
        running.append(started)
        print(started.describe(), flush=True)
    nothing = _nothing_started(cfg, pm, host, companions, bool(running), failed)
    if nothing:
        print(f"punktfunk: {nothing}", file=sys.stderr, flush=True)
        host.stop()
        return 1
    print(f"punktfunk host running (IPC {paths.ipc_endpoint}); Ctrl-C stops it", flush=True)
    notifier.ready(f"serving {', '.join(sorted(host.planes)) or 'IPC only'}"
                   + "".join(f"; {started.describe()}" for started in running))
    notifier.start_watchdog(_answers_ipc(paths, host))
    while not stop.wait(0.5):
        if host.stopped:
            break
        if reload_requested.is_set():
            reload_requested.clear()
            reload.reload_config(host)  # logs what it applied, needs a restart for, or refused
    log.info("stopping")
    notifier.stopping("stopping")
    for started in reversed(running):
        started.stop()
    host.stop()
    return 0


def _answers_ipc(paths: Paths, host: Any) -> Any:
    """The watchdog's health check: the host runs and its IPC thread answers a status call."""
    client = IpcClient(paths.ipc_endpoint, timeout=2.0)

    def healthy() -> bool:
        try:
            return not host.stopped and bool(client.call("host.status"))
        except IpcError:
            return False
    return healthy


def _nothing_started(cfg: dict[str, Any], pm: PluginManager, host: Any, companions: dict[str, Companion],
                     any_running: bool, failed: dict[str, str]) -> str:
    """When the host was asked for protocols or companions and none of them
    started: one line with each reason (and so what to fix); else ""."""
    asked = [n for n in pm.protocols.names() if configmod.protocol_enabled(cfg, n)]
    asked_companions = [n for n, c in companions.items() if c.enabled(cfg)]
    if host.planes or any_running or not (asked or asked_companions):
        return ""  # something serves, or only IPC was asked for (--no-console, no protocol)
    reasons = [f"protocol {n}: {host.protocol_errors.get(n, 'did not start')}" for n in asked]
    reasons += [f"{n}: {failed.get(n, 'did not start')}" for n in asked_companions]
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
            reason = e.available(None)
            note = (note + "; " if note else "") + ("available" if not reason else f"unavailable: {reason}")
        print(f"{e.kind:<14} {e.name:<16} {e.plugin:<14} {note}")
    if pm.protocols.names():
        print()
        print("protocols: " + ", ".join(f"{n} ({pm.protocols.plugin_of(n)})" for n in pm.protocols.names()))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    path = configfile.resolve(args.file)
    cfg = configmod.load(path, args.pm)
    problems = companion_problems(args.companions, cfg, Paths.from_env())  # what `serve` would refuse at start
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path or configfile.DEFAULTS}: ok")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(configmod.build_schema(args.pm), indent=2))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    host = ipc.connect()
    st = host.call("host.status")
    sessions = host.call("sessions.list")
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


def cmd_pairing_list(args: argparse.Namespace) -> int:
    host = ipc.connect()
    protocols = host.call("pairing.protocols")
    clients = {p["protocol"]: host.call("pairing.clients", protocol=p["protocol"]) for p in protocols if p["running"]}
    if args.json:
        print(json.dumps({"protocols": protocols, "clients": clients}, indent=2))
        return 0
    for p in protocols:
        how = {"host": "PIN window from the host", "client": "PIN shown by the client"}.get(p["pin_from"], "no pairing")
        if not p["running"]:
            print(f"{p['protocol']}: not running ({how})")
            continue
        print(f"{p['protocol']}: {len(clients[p['protocol']])} paired ({how})"
              + "".join(f"; {w}" for w in _fields(p["pairing"])))
        for c in clients[p["protocol"]]:
            print(f"  {c['fingerprint'][:16]}…  {c['name'] or '-'}" + ("  view only" if c["view_only"] else ""))
    return 0


def cmd_pairing_unpair(args: argparse.Namespace) -> int:
    res = ipc.connect().call("pairing.unpair", protocol=args.protocol, fingerprint=args.fingerprint)
    print(f"unpaired {res['unpaired'][0][:16]}…; that client must pair again")
    return 0


def cmd_pairing_view_only(args: argparse.Namespace) -> int:
    c = ipc.connect().call("pairing.permissions", protocol=args.protocol, fingerprint=args.fingerprint,
                           view_only=args.state == "on")
    print(f"{c['fingerprint'][:16]}… ({c['name'] or 'no name'}): "
          + ("view only" if c["view_only"] else "full control"))
    return 0


def _launched_by(running: dict[str, Any]) -> str:
    who = " ".join(x for x in (running.get("protocol"), repr(running["client"]) if running.get("client") else "") if x)
    return f"launched by {who}" if who else "launched on the host"


def cmd_apps_list(args: argparse.Namespace) -> int:
    st = ipc.connect().call("apps.list")
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    running = st["running"]
    for app in st["apps"]:
        mark = "*" if running is not None and running["id"] == app["id"] else " "
        print(f"{mark} {app['id']:>10}  {app['name']}" + (f"  ({app['cmd']})" if app["cmd"] else "  (the screen)"))
    if running is None:
        print("no app is running")
    else:
        group = f"process group {running['pgid']}" if running["pgid"] else "no process tracked"
        state = "ending" if running["ending"] else "running"
        print(f"* {state}: {running['name']} for {running['seconds']:.0f} s, {_launched_by(running)}, {group}")
    return 0


def cmd_apps_quit(args: argparse.Namespace) -> int:
    host = ipc.connect()
    quitting = host.call("apps.quit")["quitting"]
    if quitting is None:
        print("no app was running")
        return 0
    print(f"quitting {quitting['name']} ({_launched_by(quitting)}); its stream ends now", flush=True)
    if args.no_wait:
        return 0
    # the host answers at once and ends the app on a thread: wait until it is gone (bounded)
    deadline = time.monotonic() + quitting["ends_within_s"] + 2.0
    while time.monotonic() < deadline:
        running = host.call("apps.list")["running"]
        if running is None or (running["id"], running["since"]) != (quitting["id"], quitting["since"]):
            print(f"{quitting['name']} ended (its process group and undo steps done)")
            return 0
        time.sleep(0.1)
    print(f"{quitting['name']} is still ending after {quitting['ends_within_s'] + 2.0:.0f} s; see the host's log",
          file=sys.stderr)
    return 1


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
    info = ipc.connect().call("sessions.loopback", **req)
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
          f"({final.get('frames_sent', 0) / seconds:.1f} fps, "
          f"{final.get('bytes_sent', 0) * 8 / seconds / 1e6:.2f} Mb/s)"
          + (f"; {final['frames_dropped']} frames dropped by the host" if final.get("frames_dropped") else ""))
    refused = final.get("send_dropped") or 0
    if refused:
        note = ("expected: nobody listens on that port, and each ICMP port-unreachable makes the kernel refuse "
                "the next datagram" if not args.port else "is something listening on that port?")
        print(f"{refused} datagrams refused by the kernel ({note})")
    return 0


def _wait_for_end(session_id: int) -> dict[str, Any]:
    """Block until the session ended (Ctrl-C ends it first); its final info."""
    client = ipc.connect()
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


def _companions(pm: PluginManager) -> dict[str, Companion]:
    """The companions plugins add (``serve_companions``), by name."""
    out: dict[str, Companion] = {}
    for name, (companion, plugin) in pm.collect_named("serve_companions").items():
        if isinstance(companion, Companion):
            out[name] = companion
        else:
            log.error("plugin %s: companion %r is not a punktfunk_core.companion.Companion; ignored", plugin, name)
    return out


def build_parser(pm: PluginManager) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="punktfunk", description="Low-latency game and desktop streaming host.")
    parser.add_argument("--version", action="version", version=f"punktfunk {__version__}")
    parser.set_defaults(pm=pm, func=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    companions = _companions(pm)
    parser.set_defaults(companions=companions)
    p = sub.add_parser("serve", help="run the host (and its companions, such as the web console)")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="TOML config file (default: host.toml in the config dir when present, else built-in "
                        "defaults); SIGHUP re-reads it")
    p.add_argument("--enable", action="append", default=[], metavar="SECTION",
                   help="turn on a plugin for this run (its SECTION.enabled = true); may be repeated")
    for companion in companions.values():
        companion.add_serve_arguments(p)
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

    p = sub.add_parser("pairing", help="paired clients of every protocol and what each may do")
    psub = p.add_subparsers(dest="pairing_command", metavar="ACTION", required=True)
    c = psub.add_parser("list", help="protocols, their pairing state and paired clients")
    c.add_argument("--json", action="store_true", help="print pairing.protocols and each pairing.clients as JSON")
    c.set_defaults(func=cmd_pairing_list)
    c = psub.add_parser("unpair", help="forget a paired client (it must pair again)")
    c.add_argument("protocol")
    c.add_argument("fingerprint", help="the client's certificate fingerprint, or its first 8+ hex digits")
    c.set_defaults(func=cmd_pairing_unpair)
    c = psub.add_parser("view-only", help="let a paired client only watch (on) or also control (off)")
    c.add_argument("protocol")
    c.add_argument("fingerprint", help="the client's certificate fingerprint, or its first 8+ hex digits")
    c.add_argument("state", choices=["on", "off"])
    c.set_defaults(func=cmd_pairing_view_only)

    p = sub.add_parser("apps", help="the apps clients can launch and the running one; quit it")
    p.add_argument("--json", action="store_true", help="print apps.list as JSON")
    p.set_defaults(func=cmd_apps_list)
    asub = p.add_subparsers(dest="apps_command", metavar="ACTION")  # none: the list, the running one marked *
    c = asub.add_parser("quit", help="end the running app: its stream, its process group, then its undo steps")
    c.add_argument("--no-wait", action="store_true", help="return once the host took the quit")
    c.set_defaults(func=cmd_apps_quit)

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

    from punktfunk_core import doctor, service

    doctor.add_parser(sub)
    service.add_parser(sub)
    pm.call_each("cli_commands", {"subparsers": sub})
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
    except IpcError as exc:  # a command (ours or a plugin's) the host refused, or no host
        print(f"punktfunk: {exc.message}", file=sys.stderr)
        return 1
    except configmod.ConfigError as exc:  # one line per problem, naming the file
        for problem in exc.problems:
            print(f"{exc.source}: {problem}" if exc.source != "defaults" else problem, file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`punktfunk plugins | head -2`): stop quietly, and keep
        # the interpreter's final flush from failing on the closed pipe too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
