"""``punktfunk doctor``: what this machine lets the host do, one line per finding with what to do.

The core names no plugin here: each plugin says what it knows of the machine
through two hooks (docs/plugins.md): ``doctor_findings`` (its
:class:`Finding` lines: the display, the sound server, the GPU encoder, a
compiled part, whether its protocol is on) and ``listening_ports`` (the
:class:`Port` objects its config section makes the host listen on). The core
adds what is generic: the configured capture stage and an encoder, checked with
the stages' own availability probes (so doctor and the host never disagree),
whether each port can be bound, which protocols can serve, and the firewall
hint. Probes that talk to another process run with a deadline
(:func:`bounded`): a server that accepts a connection and never answers is a
finding ("no answer within 3 s"), never a hang.

Exit status: 0 when the host can stream with the config it was given (its
capture stage and an encoder are usable and at least one protocol is enabled
with nothing blocking it: a busy port, or a finding whose ``blocks`` names it),
1 otherwise, 2 for an invalid config.
"""

from __future__ import annotations

import argparse
import errno
import json
import shutil
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from punktfunk_core import config as configmod

#: how long one probe of another process (X server, sound server, driver) may take
PROBE_TIMEOUT_S = 3.0

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Finding:
    """One line of the report: what was checked, how it stands, and what to do about it."""

    check: str
    status: str  # ok | warn | fail | info
    message: str
    fix: str = ""
    #: the protocol (config section) this finding stops from serving, e.g. a busy port; "" for none
    blocks: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "message": self.message, "fix": self.fix}

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
    value: T = box["value"]
    return value


def check_stages(cfg: dict[str, Any], pm: Any) -> list[Finding]:
    """The configured capture stage, and an encoder for the configured codec (for
    ``stream.encoder = auto`` the candidates the host chooses from, in its order)."""
    out: list[Finding] = []
    stream = cfg["stream"]
    capture = stream["capture"]
    if ("capture", capture) not in pm.stages:
        out.append(Finding("capture", FAIL, f"stream.capture = {capture!r} is no capture stage",
                           f"one of: {', '.join(pm.stages.names('capture'))}"))
    else:
        reason = _available(pm.stages.get("capture", capture))
        out.append(Finding("capture", FAIL, f"capture {capture!r} unusable: {reason}",
                           "fix the reason above or choose another stream.capture") if reason else
                   Finding("capture", OK, f"capture {capture!r} usable"))
    codec = stream["codec"]
    wanted = stream["encoder"]
    names = [e.name for e in pm.stages.candidates("encoder", codec)] if wanted == "auto" else [wanted]
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
    out.append(Finding("encoder", FAIL, f"no usable {codec} encoder ({'; '.join(reasons) or 'none registered'})",
                       "install PyAV with libx264 (pip install av) or set stream.codec/encoder to one that works"))
    return out


def _available(entry: Any, codec: str | None = None) -> str:
    """The stage's own availability probe, with a deadline; a probe that fails is a reason."""
    try:
        return str(bounded(lambda: entry.reason_unavailable(codec), PROBE_TIMEOUT_S * 3))
    except Exception as exc:  # noqa: BLE001 - ProbeTimeout and whatever the probe raised
        return str(exc)


# -- network -------------------------------------------------------------------------
@dataclass(frozen=True)
class Port:
    """A port the config makes the host (or a companion) listen on, as a plugin's
    :func:`~punktfunk_core.hookspecs.listening_ports` registers it."""

    section: str  # the config section that opens it: a busy port stops that protocol from serving
    owner: str  # what listens, in words: "native control", "gamestream video"
    proto: str  # tcp | udp
    bind: str
    port: int  # 0: any free port, chosen when the host starts (not checked; ``chosen`` says what to open)
    clients: bool = True  # streaming clients on the LAN connect to it (the firewall hint lists it)
    chosen: str = ""  # for port 0: what a firewall rule needs instead of a number


def collect(pm: Any, hook: str, config: dict[str, Any], kind: type[R], label: str) -> tuple[list[R], list[Finding]]:
    """What every plugin registers through ``hook``; a plugin whose hook fails is a finding, never a crash."""
    found: list[R] = []

    def register(item: R) -> None:
        if not isinstance(item, kind):
            raise TypeError(f"register() takes a {kind.__name__}, not {type(item).__name__}")
        found.append(item)

    failures = pm.call_each(hook, {"config": config, "register": register})
    return found, [Finding(label, WARN, f"plugin {f.plugin}: {hook} failed: {type(f.error).__name__}: {f.error}",
                           "report it to the plugin's author; the other checks ran") for f in failures]


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


def check_ports(ports: list[Port]) -> list[Finding]:
    """One finding per busy port (it blocks its section), one for all free ones."""
    out: list[Finding] = []
    free: list[str] = []
    for p in ports:
        if not p.port:
            continue
        problem = port_problem(p)
        label = f"{p.proto.upper()} {p.bind}:{p.port} ({p.owner})"
        if not problem:
            free.append(f"{p.proto}/{p.port}")
            continue
        fix = (f"is a punktfunk host already running (punktfunk status)? Else find the owner: "
               f"ss -{'t' if p.proto == 'tcp' else 'u'}lpn 'sport = :{p.port}'" if problem == "busy"
               else "choose another port in the config")
        out.append(Finding("port", FAIL, f"{label} is {problem}", fix, blocks=p.section))
    if free:
        out.append(Finding("port", OK, "free: " + ", ".join(free)))
    return out


def check_protocols(cfg: dict[str, Any], protocols: list[str], findings: list[Finding]) -> tuple[list[Finding], bool]:
    """Whether one enabled protocol has nothing blocking it. A protocol that is off gets a line,
    unless its plugin already said so in a finding named after it."""
    out: list[Finding] = []
    blocked = {f.blocks for f in findings if f.blocks}
    said = {f.check for f in findings}
    usable = False
    for name in protocols:
        on = bool(cfg.get(name, {}).get("enabled"))
        if not on and name not in said:
            out.append(Finding(name, INFO, f"protocol {name} is off ({name}.enabled = false)"))
        if on and name not in blocked:
            usable = True
    if not usable:
        out.append(Finding("protocols", FAIL, "no protocol can serve (none enabled, or their ports are busy)",
                           "enable one (" + " or ".join(protocols) + ") and free its ports"))
    return out, usable


def firewall_hint(ports: list[Port]) -> list[Finding]:
    """Which ports a LAN client needs open; the tool to open them with, when one is installed."""
    tcp: list[str] = []
    udp: list[str] = []
    for p in ports:
        if p.clients and p.bind not in ("127.0.0.1", "::1"):
            (tcp if p.proto == "tcp" else udp).append(str(p.port) if p.port else p.chosen or f"{p.owner} (any port)")
    if not (tcp or udp):
        return [Finding("firewall", INFO, "nothing listens beyond loopback: no firewall rule needed")]
    numeric = [(k, p) for k, ports_ in (("tcp", tcp), ("udp", udp)) for p in ports_ if p.isdigit()]
    if shutil.which("ufw"):
        fix = "; ".join(f"sudo ufw allow {p}/{k}" for k, p in numeric)
    elif shutil.which("firewall-cmd"):
        fix = " ".join(["sudo firewall-cmd --permanent"] + [f"--add-port={p}/{k}" for k, p in numeric])
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
        return {"can_stream": self.can_stream, "findings": [f.to_json() for f in self.findings]}


def diagnose(cfg: dict[str, Any], pm: Any) -> Report:
    """Every plugin's findings (in load order), then the stages, the ports and the protocols."""
    protocols = list(pm.protocols.names())
    findings, failed = collect(pm, "doctor_findings", cfg, Finding, "doctor")
    findings += failed
    ports, failed = collect(pm, "listening_ports", cfg, Port, "port")
    findings += failed
    stages = check_stages(cfg, pm)
    findings += stages
    findings += check_ports(ports)
    protos, serving = check_protocols(cfg, protocols, findings)
    findings += protos
    findings += firewall_hint(ports)
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


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check this machine: display, sound, input, encoders, ports",
                       description="One line per finding with what to do. Exit 0 when the host can stream "
                                   "(a capture, an encoder and at least one protocol), 1 otherwise.")
    p.add_argument("-c", "--config", metavar="FILE", help="the TOML config the host runs with")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=cmd_doctor)
