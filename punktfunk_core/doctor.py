"""``punktfunk doctor``: what this machine lets the host do, one line per finding with what to do.

Each check is a function returning :class:`Finding` objects. Probes that talk
to another process (the X server, the sound server, the NVIDIA driver) run with
a deadline: a server that accepts a connection and never answers is a finding
("did not answer within 3 s"), never a hang. The checks reuse the probes the
stages themselves use (x11, desktop audio, nvenc, uinput, GameStream FEC, the
native sealer), so doctor and the host never disagree about the machine.

Exit status: 0 when the host can stream with the config it was given (its
capture stage and an encoder are usable and at least one protocol is enabled
with its ports free), 1 otherwise, 2 for an invalid config.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, TypeVar

from punktfunk_core import config as configmod

#: how long one probe of another process (X server, sound server, driver) may take
PROBE_TIMEOUT_S = 3.0

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"

T = TypeVar("T")


@dataclass
class Finding:
    check: str
    status: str  # ok | warn | fail | info
    message: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<5} {self.check:<13} {self.message}" + (f" — {self.fix}" if self.fix else "")


class ProbeTimeout(Exception):
    pass


def bounded(fn: Callable[[], T], timeout: float = PROBE_TIMEOUT_S) -> T:
    """``fn()`` on a daemon thread; its result, its exception, or :class:`ProbeTimeout`
    when it has not returned within ``timeout`` (the thread is left behind: doctor exits soon)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, name="doctor-probe", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise ProbeTimeout(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


# -- the desktop -------------------------------------------------------------------
def check_display(display: str | None = None) -> list[Finding]:
    """X display reachable, XTest (input) and XFixes (the pointer in captures)."""
    name = display if display is not None else os.environ.get("DISPLAY", "")
    if not name:
        fix = ("run the host inside the desktop session (the systemd user service imports DISPLAY from it), "
               "or set DISPLAY=:0")
        return [Finding("x11-display", WARN, "DISPLAY is not set: no x11 capture, no XTest input", fix)]
    try:
        from Xlib import display as xdisplay
    except ImportError:
        return [Finding("x11-display", FAIL, "python-xlib is not installed", "pip install python-xlib")]

    def probe() -> tuple[bool, bool, str]:
        d = xdisplay.Display(name)
        try:
            vendor = d.get_display_name()
            return d.has_extension("XTEST"), d.has_extension("XFIXES"), vendor
        finally:
            d.close()

    try:
        xtest, xfixes, _ = bounded(probe)
    except ProbeTimeout as exc:
        return [Finding("x11-display", FAIL, f"X display {name} accepted the connection but gave {exc}",
                        "is the X server frozen or a stale socket left in /tmp/.X11-unix?")]
    except Exception as exc:  # noqa: BLE001 - python-xlib raises DisplayError, OSError and more
        return [Finding("x11-display", FAIL, f"X display {name} is not reachable: {exc}",
                        "start the host from the desktop session, or allow it: xhost +SI:localuser:$USER")]
    out = [Finding("x11-display", OK, f"X display {name} reachable")]
    out.append(Finding("xtest", OK, "XTest present: keyboard and mouse input can be injected") if xtest else
               Finding("xtest", WARN, f"X display {name} has no XTEST extension: no input through xtest",
                       "enable XTEST in the X server, or use input.backend = \"uinput\""))
    out.append(Finding("cursor", OK, "XFixes present: the pointer is drawn into x11 captures") if xfixes else
               Finding("cursor", WARN, f"X display {name} has no XFIXES extension: captures show no pointer",
                       "enable XFIXES in the X server (every desktop X server has it)"))
    return out


def check_sound() -> list[Finding]:
    """A PulseAudio-protocol server answers and offers a monitor source (what the desktop plays)."""
    from punktfunk_core.media.desktop_audio import server_answers

    reason = server_answers(PROBE_TIMEOUT_S)
    if reason:
        fix = ("apt-get install pulseaudio-utils" if "not installed" in reason else
               "run the host in the desktop session (PipeWire's pipewire-pulse or PulseAudio), or set PULSE_SERVER")
        return [Finding("sound", WARN, f"no desktop audio: {reason} (streams carry a tone)", fix)]
    try:
        done = subprocess.run(["pactl", "list", "short", "sources"], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [Finding("sound", WARN, f"the sound server did not list its sources within {PROBE_TIMEOUT_S:g} s")]
    monitors = [f[1] for f in (line.split("\t") for line in done.stdout.splitlines()) if len(f) > 1
                and f[1].endswith(".monitor")]
    if not monitors:
        return [Finding("sound", WARN, "the sound server answers but has no monitor source: nothing to record",
                        "add an output (a null sink will do: pactl load-module module-null-sink)")]
    return [Finding("sound", OK, f"sound server answers; monitor source {monitors[0]}"
                    + (f" (+{len(monitors) - 1} more)" if len(monitors) > 1 else ""))]


def check_uinput() -> list[Finding]:
    try:
        from punktfunk_input.uinput import available
    except ImportError:
        return [Finding("uinput", INFO, "the input plugin is not installed")]
    reason = available()
    if reason:
        return [Finding("uinput", WARN, "no virtual controllers or touch through uinput", reason)]
    return [Finding("uinput", OK, "/dev/uinput writable: virtual gamepads, touch and pen can be created")]


# -- encoders and compiled parts ------------------------------------------------------
def _nvidia_driver() -> str:
    try:
        with open("/proc/driver/nvidia/version", encoding="ascii", errors="replace") as f:
            first = f.readline()
    except OSError:
        return ""
    words = first.split()
    return next((w for w in words if w[:1].isdigit() and "." in w), first.strip())


def check_nvenc() -> list[Finding]:
    from punktfunk_core.media.nvenc import available

    driver = _nvidia_driver()
    try:
        reason = bounded(lambda: available("h264"), PROBE_TIMEOUT_S * 3)
    except ProbeTimeout as exc:
        reason = f"the NVENC probe gave {exc}"
    if not reason:
        return [Finding("nvenc", OK, f"NVENC usable (driver {driver or 'unknown'})")]
    if "not installed" in reason:
        fix = "pip install 'punktfunk[nvenc]'" if driver else "needs an NVIDIA GPU and its driver; x264 is used meanwhile"
    else:
        fix = "install or update the NVIDIA driver (nvidia-smi must work)" if not driver else "check nvidia-smi"
    return [Finding("nvenc", WARN, f"{reason}; encoding falls back to the CPU"
                    + (f" (driver {driver})" if driver else " (no NVIDIA driver loaded)"), fix)]


def check_fec() -> list[Finding]:
    try:
        from punktfunk_gamestream import fec
    except ImportError:
        return [Finding("isa-l", INFO, "the gamestream plugin is not installed")]
    line = fec.describe()
    if isinstance(fec.best_kernel(), fec.IsalKernel):
        return [Finding("isa-l", OK, f"GameStream FEC: {line}")]
    return [Finding("isa-l", WARN, f"GameStream FEC: {line}",
                    "pip install the pinned pyeclib wheel again, or apt-get install libisal2")]


def check_sealer() -> list[Finding]:
    try:
        from punktfunk_native.datapath import batch_sealer_available
    except ImportError:
        return [Finding("sealer", INFO, "the native plugin is not installed")]
    if batch_sealer_available():
        return [Finding("sealer", OK, "the C batch sealer of punktfunk/1 is built")]
    return [Finding("sealer", WARN, "the C batch sealer is not built: punktfunk/1 seals packet by packet (slower)",
                    "apt-get install gcc libssl-dev, then pip install . again")]


def check_stages(cfg: dict[str, Any], pm: Any) -> list[Finding]:
    """The configured capture stage, and an encoder for the configured codec."""
    out: list[Finding] = []
    stream = cfg["stream"]
    capture = stream["capture"]
    if ("capture", capture) not in pm.stages:
        out.append(Finding("capture", FAIL, f"stream.capture = {capture!r} is no capture stage",
                           f"one of: {', '.join(pm.stages.names('capture'))}"))
    else:
        entry = pm.stages.get("capture", capture)
        reason = _available(entry)
        out.append(Finding("capture", FAIL, f"capture {capture!r} unusable: {reason}",
                           "fix the reason above or choose another stream.capture") if reason else
                   Finding("capture", OK, f"capture {capture!r} usable"))
    codec = stream["codec"]
    wanted = stream["encoder"]
    cpu = {"h264": "x264", "hevc": "hevc", "av1": "av1"}[codec]
    names = ["nvenc", cpu] if wanted == "auto" else [wanted]
    reasons = []
    for name in names:
        if ("encoder", name) not in pm.stages:
            reasons.append(f"{name}: no such encoder stage")
            continue
        reason = _available(pm.stages.get("encoder", name), codec)
        if not reason:
            out.append(Finding("encoder", OK, f"{codec} encodes with {name}"
                               + (" (stream.encoder = auto)" if wanted == "auto" else "")))
            return out
        reasons.append(f"{name}: {reason}")
    out.append(Finding("encoder", FAIL, f"no usable {codec} encoder ({'; '.join(reasons)})",
                       "install PyAV with libx264 (pip install av) or set stream.codec/encoder to one that works"))
    return out


def _available(entry: Any, *args: Any) -> str:
    if entry.available is None:
        return ""
    try:
        return str(bounded(lambda: entry.available(*args) if args else entry.available(), PROBE_TIMEOUT_S * 3))
    except TypeError:  # an availability probe that takes no codec
        return str(bounded(entry.available, PROBE_TIMEOUT_S * 3))
    except Exception as exc:  # noqa: BLE001 - a probe that fails is a reason
        return str(exc)


# -- network -------------------------------------------------------------------------
@dataclass(frozen=True)
class Port:
    owner: str  # e.g. "native control", "gamestream video"
    proto: str  # tcp | udp
    bind: str
    port: int


def configured_ports(cfg: dict[str, Any], protocols: Iterable[str]) -> list[Port]:
    """The fixed ports the config makes the host listen on (0 = any free port is left out)."""
    ports: list[Port] = []
    console = cfg.get("console", {})
    if console.get("enabled") and console.get("port"):
        ports.append(Port("console", "tcp", console.get("bind", "127.0.0.1"), int(console["port"])))
    native = cfg.get("native", {})
    if "native" in protocols and native.get("enabled"):
        if native.get("port"):
            ports.append(Port("native control", "tcp", native.get("bind", "0.0.0.0"), int(native["port"])))
        if native.get("data_port"):
            ports.append(Port("native data", "udp", native.get("bind", "0.0.0.0"), int(native["data_port"])))
    gs = cfg.get("gamestream", {})
    if "gamestream" in protocols and gs.get("enabled") and gs.get("port_base"):
        from punktfunk_gamestream.plane import PORT_OFFSETS

        udp = {"video", "control", "audio"}
        for name, offset in PORT_OFFSETS.items():
            ports.append(Port(f"gamestream {name}", "udp" if name in udp else "tcp", gs.get("bind", "0.0.0.0"),
                              int(gs["port_base"]) + offset))
    return ports


def port_problem(p: Port) -> str:
    """"" when ``p`` can be bound now (the way the host binds it), else why not."""
    kind = socket.SOCK_STREAM if p.proto == "tcp" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if ":" in p.bind else socket.AF_INET
    try:
        with socket.socket(family, kind) as s:
            if p.proto == "tcp":  # as socket.create_server does: TIME_WAIT leftovers do not count
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((p.bind, p.port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "busy"
        return exc.strerror or str(exc)
    return ""


def check_ports(cfg: dict[str, Any], protocols: list[str]) -> tuple[list[Finding], set[str]]:
    """One finding per busy port (one for all free ones); also the protocols that have a busy port."""
    out: list[Finding] = []
    blocked: set[str] = set()
    free: list[str] = []
    for p in configured_ports(cfg, protocols):
        problem = port_problem(p)
        label = f"{p.proto.upper()} {p.bind}:{p.port} ({p.owner})"
        if not problem:
            free.append(f"{p.proto}/{p.port}")
            continue
        blocked.add(p.owner.split()[0])
        fix = (f"is a punktfunk host already running (punktfunk status)? Else find the owner: "
               f"ss -{'t' if p.proto == 'tcp' else 'u'}lpn 'sport = :{p.port}'" if problem == "busy"
               else "choose another port in the config")
        out.append(Finding("port", FAIL, f"{label} is {problem}", fix))
    if free:
        out.append(Finding("port", OK, "free: " + ", ".join(free)))
    return out, blocked


def check_protocols(cfg: dict[str, Any], protocols: list[str], blocked: set[str]) -> tuple[list[Finding], bool]:
    """Which protocols are on (GameStream is opt-in); whether one of them can serve."""
    out: list[Finding] = []
    usable = False
    for name in protocols:
        on = bool(cfg.get(name, {}).get("enabled"))
        if name == "gamestream":
            out.append(Finding("gamestream", INFO, "GameStream enabled: Moonlight clients can pair (plain HTTP pairing)")
                       if on else Finding("gamestream", INFO, "GameStream is off (opt-in)",
                                          "for Moonlight clients: punktfunk serve --gamestream, or "
                                          "[gamestream] enabled = true"))
        elif not on:
            out.append(Finding(name, INFO, f"protocol {name} is off ({name}.enabled = false)"))
        if on and name not in blocked:
            usable = True
    if not usable:
        out.append(Finding("protocols", FAIL, "no protocol can serve (none enabled, or their ports are busy)",
                           "enable native (the default) or gamestream, and free their ports"))
    return out, usable


def firewall_hint(cfg: dict[str, Any], protocols: list[str]) -> list[Finding]:
    """Which ports a LAN client needs open; the tool to open them with, when one is installed."""
    tcp: list[str] = []
    udp: list[str] = []
    native = cfg.get("native", {})
    if "native" in protocols and native.get("enabled") and native.get("bind") not in ("127.0.0.1", "::1"):
        tcp.append(str(native.get("port") or "the control port `punktfunk status` shows"))
        udp.append(str(native["data_port"]) if native.get("data_port") else
                   "native data (a free port per session: set native.data_port to open one)")
    for p in configured_ports(cfg, protocols):
        if p.owner.startswith("gamestream") and p.bind not in ("127.0.0.1", "::1"):
            (tcp if p.proto == "tcp" else udp).append(str(p.port))
    if not (tcp or udp):
        return [Finding("firewall", INFO, "nothing listens beyond loopback: no firewall rule needed")]
    numeric_udp = [u for u in udp if u.isdigit()]
    if shutil.which("ufw"):
        fix = "; ".join(f"sudo ufw allow {p}/{k}" for k, ports in (("tcp", tcp), ("udp", numeric_udp))
                        for p in ports if p.isdigit())
    elif shutil.which("firewall-cmd"):
        fix = " ".join(["sudo firewall-cmd --permanent"] + [f"--add-port={p}/{k}" for k, ports in
                                                             (("tcp", tcp), ("udp", numeric_udp))
                                                             for p in ports if p.isdigit()])
    else:
        fix = "if a firewall filters inbound traffic, open these ports for your LAN"
    return [Finding("firewall", INFO, f"clients on the LAN need TCP {', '.join(tcp) or '-'} and UDP "
                    f"{', '.join(udp) or '-'}", fix)]


# -- the whole report --------------------------------------------------------------------
@dataclass
class Report:
    findings: list[Finding]
    can_stream: bool

    def to_json(self) -> dict[str, Any]:
        return {"can_stream": self.can_stream, "findings": [asdict(f) for f in self.findings]}


def diagnose(cfg: dict[str, Any], pm: Any) -> Report:
    protocols = list(pm.protocols.names())
    findings: list[Finding] = []
    findings += check_display()
    findings += check_sound()
    findings += check_uinput()
    findings += check_nvenc()
    findings += check_fec()
    findings += check_sealer()
    stages = check_stages(cfg, pm)
    findings += stages
    ports, blocked = check_ports(cfg, protocols)
    findings += ports
    protos, serving = check_protocols(cfg, protocols, blocked)
    findings += protos
    findings += firewall_hint(cfg, protocols)
    can_stream = serving and all(f.status != FAIL for f in stages)
    return Report(findings, can_stream)


def cmd_doctor(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config, args.pm)  # a bad file: main() prints its lines and exits 2
    report = diagnose(cfg, args.pm)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for f in report.findings:
            print(f.line())
        print("this host can stream" if report.can_stream else "this host cannot stream: see the fail lines above",
              file=sys.stdout if report.can_stream else sys.stderr)
    return 0 if report.can_stream else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this machine: display, sound, input, encoders, ports",
                       description="One line per finding with what to do. Exit 0 when the host can stream "
                                   "(a capture, an encoder and at least one protocol), 1 otherwise.")
    p.add_argument("-c", "--config", metavar="FILE", help="the TOML config the host runs with")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=cmd_doctor)
