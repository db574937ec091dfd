"""Entry point of the native punktfunk/1 plugin (``punktfunk_native.plugin``).

Contributes: the ``native`` protocol plane (on by default; it pairs through
the core's pairing contract, so the ``pairing.*`` IPC commands and the
console's pairing bridge serve it), the ``native`` packetizer and sender
stages, the ``native`` config section, and the CLI commands ``punktfunk
native pin|clients|unpair`` and ``punktfunk client HOST``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from punktfunk_core import hookimpl
from punktfunk_core.adaptive import AdaptiveSettings
from punktfunk_core.ipc import connect
from punktfunk_core.settings import LIVE_NEW_SESSIONS, LIVE_NOW, Settings, setting
from punktfunk_core.stages import StreamSpec

SECTION = "native"


@dataclass(frozen=True, kw_only=True)
class NativeSettings(AdaptiveSettings):
    """The native punktfunk/1 protocol (TLS 1.3 control, encrypted FEC'd UDP video)."""

    enabled: bool = setting(True)
    bind: str = setting("0.0.0.0", "address the control port listens on")
    port: int = setting(47992, "TCP control port (0 = any free port, shown by `punktfunk status`)",
                        minimum=0, maximum=65535)
    data_port: int = setting(0, "UDP port for video (0 = a free port per session, told to the client)",
                             minimum=0, maximum=65535, live=LIVE_NEW_SESSIONS)
    fec_percent: int = setting(20, "Reed-Solomon parity shards per access unit, in percent of its data shards",
                               minimum=0, maximum=100, live=LIVE_NEW_SESSIONS)
    fec_min_parity: int = setting(2, "at least this many parity shards per access unit when fec_percent > 0",
                                  minimum=0, maximum=64, live=LIVE_NEW_SESSIONS)
    shard_bytes: int = setting(1200, "largest shard payload (datagram = shard + 48 bytes)",
                               minimum=64, maximum=1408, multipleOf=2, live=LIVE_NEW_SESSIONS)
    target_shards: int = setting(64, "split small access units into about this many shards (FEC statistics)",
                                 minimum=1, maximum=1024, live=LIVE_NEW_SESSIONS)
    min_shard_bytes: int = setting(64, minimum=2, maximum=1408, multipleOf=2, live=LIVE_NEW_SESSIONS)
    gso: bool = setting(True, "batch datagrams with UDP GSO where the kernel supports it", live=LIVE_NEW_SESSIONS)
    pace_percent: int = setting(50, "spread each frame's datagrams over this share of the frame interval",
                                minimum=0, maximum=100, live=LIVE_NEW_SESSIONS)
    keepalive_interval_s: float = setting(0.5, minimum=0.05, maximum=30, live=LIVE_NEW_SESSIONS)
    keepalive_timeout_s: float = setting(3.0, "end a session when the client is silent this long",
                                         minimum=0.2, maximum=120, live=LIVE_NEW_SESSIONS)
    max_bitrate_kbps: int = setting(200_000, minimum=100, maximum=2_000_000, live=LIVE_NEW_SESSIONS)
    max_connections: int = setting(16, "control connections of paired clients at once", minimum=1, maximum=256)
    max_unauthenticated: int = setting(16, "connections without a paired certificate at once (TLS handshake, "
                                           "pairing); a new one beyond this closes the oldest",
                                       minimum=1, maximum=256)
    unauthenticated_per_source: int = setting(4, "of those, from one source address; a new one beyond this "
                                                 "closes that address's oldest", minimum=1, maximum=64)
    unauthenticated_timeout_s: float = setting(10.0, "a connection without a paired certificate is closed this "
                                                     "long after it was accepted, whatever it sends (pings included)",
                                               minimum=1, maximum=120)
    audio: bool = setting(True, "stream audio when the client asks for it (audio_source → Opus in the channels "
                                "it asks for, on the session's encrypted datapath)", live=LIVE_NEW_SESSIONS)
    audio_source: str = setting("auto", "audio_source stage name: auto (the desktop's sound when a sound server "
                                        "answers, else the tone), desktop, tone", stage="audio_source",
                                live=LIVE_NEW_SESSIONS)
    pairing_attempts: int = setting(5, "PIN guesses (pairing attempts started) per pairing window",
                                    minimum=1, maximum=100, live=LIVE_NOW)


@dataclass(frozen=True, kw_only=True)
class NativePacketizerOptions(Settings):
    """Options of the native packetizer (a session's plane passes its own)."""

    key: Any = setting(None, "AES-128 key: 16 raw bytes or 32 hex digits (random when absent)")
    fec_percent: int = setting(NativeSettings.fec_percent, minimum=0, maximum=100)
    fec_min_parity: int = setting(NativeSettings.fec_min_parity, minimum=0, maximum=64)
    shard_bytes: int = setting(NativeSettings.shard_bytes, minimum=64, maximum=1408, multipleOf=2)
    target_shards: int = setting(NativeSettings.target_shards, minimum=1, maximum=1024)
    min_shard_bytes: int = setting(NativeSettings.min_shard_bytes, minimum=2, maximum=1408, multipleOf=2)


@dataclass(frozen=True, kw_only=True)
class NativeSenderOptions(Settings):
    """Options of the native sender: an open UDP socket, or host and port."""

    sock: Any = setting(None, "an open UDP socket (the plane's); else one is opened to host:port")
    host: str = setting("127.0.0.1")
    port: int = setting(0, minimum=0, maximum=65535)
    gso: bool = setting(NativeSettings.gso)
    pace_percent: int = setting(NativeSettings.pace_percent, minimum=0, maximum=100)


def _packetizer(spec: StreamSpec, options: dict[str, Any]) -> Any:
    """``options``: key (16 raw bytes or 32 hex chars; random when absent), fec_percent,
    fec_min_parity, shard_bytes, target_shards, min_shard_bytes."""
    from punktfunk_native.datapath import FecParams, NativePacketizer

    key = options.get("key") or os.urandom(16)
    if isinstance(key, str):
        key = bytes.fromhex(key)
    fec = FecParams(int(options.get("fec_percent", 20)), int(options.get("fec_min_parity", 2)),
                    int(options.get("shard_bytes", 1200)), int(options.get("target_shards", 64)),
                    int(options.get("min_shard_bytes", 64)))
    return NativePacketizer(key, fec)


def _sender(spec: StreamSpec, options: dict[str, Any]) -> Any:
    """``options``: sock (an open UDP socket) or host/port; gso (bool), pace_percent."""
    import socket

    from punktfunk_native.datapath import NativeSender

    sock = options.get("sock")
    addr = (str(options.get("host", "127.0.0.1")), int(options.get("port", 0)))
    if sock is None:
        if not 1 <= addr[1] <= 65535:
            raise ValueError("native sender needs a port (options: host, port)")
        sock = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_DGRAM)
    return NativeSender(sock, addr, spec.fps, gso=bool(options.get("gso", True)),
                        pace_percent=int(options.get("pace_percent", 50)))


@hookimpl
def register_stages(registry: Any) -> None:
    registry.add("packetizer", "native", _packetizer, options_schema=NativePacketizerOptions.schema(),
                 description="punktfunk/1: shards + Reed-Solomon GF(2^16) parity + AES-GCM per datagram")
    registry.add("sender", "native", _sender, options_schema=NativeSenderOptions.schema(),
                 description="punktfunk/1: paced UDP, batched with GSO where the kernel supports it")


@hookimpl
def register_protocols(registry: Any) -> None:
    from punktfunk_native.server import NativePlane

    registry.add(SECTION, NativePlane)


@hookimpl
def config_schema(register: Any) -> None:
    register(SECTION, NativeSettings.schema())


def _cmd_pin(args: argparse.Namespace) -> int:
    from punktfunk_native.client import DEFAULT_PORT

    res = connect().call("pairing.pin", protocol=SECTION, pin=args.pin, seconds=args.seconds)
    port = f" --port {res['port']}" if res["port"] != DEFAULT_PORT else ""  # the client assumes the default
    print(f"pairing open for {res['expires_in_s']:.0f} s with PIN {args.pin} (control port {res['port']}); "
          f"on the client run: punktfunk client <this host>{port} --pin {args.pin}")
    return 0


def _cmd_clients(args: argparse.Namespace) -> int:
    import json

    rows = connect().call("pairing.clients", protocol=SECTION)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['fingerprint'][:16]}…  {r['name']}" + ("  (view only)" if r.get("view_only") else ""))
        if not rows:
            print("no paired clients")
    return 0


def _cmd_unpair(args: argparse.Namespace) -> int:
    res = connect().call("pairing.unpair", protocol=SECTION, fingerprint=args.fingerprint)
    print(f"unpaired {res['unpaired'][0][:16]}…; that client must pair again with a PIN")
    return 0


def _cmd_client(args: argparse.Namespace) -> int:
    from punktfunk_native.client import main_from_args

    return main_from_args(args)


@hookimpl
def cli_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("native", help="the native punktfunk/1 protocol (pairing, clients)")
    sub = p.add_subparsers(dest="native_command", metavar="ACTION", required=True)
    c = sub.add_parser("pin", help="open pairing for a client with this PIN (default two minutes)")
    c.add_argument("pin", metavar="NNNN", help="4 to 8 digits the client must enter")
    c.add_argument("--seconds", type=float, default=120.0, help="how long pairing stays open (default 120)")
    c.set_defaults(func=_cmd_pin)
    c = sub.add_parser("clients", help="list paired clients")
    c.add_argument("--json", action="store_true", help="print the paired clients as JSON")
    c.set_defaults(func=_cmd_clients)
    c = sub.add_parser("unpair", help="forget a paired client (it must pair again)")
    c.add_argument("fingerprint", help="the client's certificate fingerprint, or its first 8+ hex digits")
    c.set_defaults(func=_cmd_unpair)

    from punktfunk_native.client import add_client_arguments

    p = subparsers.add_parser("client", help="reference punktfunk/1 client: pair, stream, decode, measure")
    add_client_arguments(p)
    p.set_defaults(func=_cmd_client)


# -- console ---------------------------------------------------------------------------
@hookimpl
def console_routes(register: Any, ipc: Any) -> None:
    from flask import Blueprint

    bp = Blueprint("native", __name__, static_folder="static")
    register.blueprint(bp)
    register.script("pairing", "pairing-card.js", bp)


@hookimpl
def doctor_findings(config: dict[str, Any], register: Any) -> None:
    from punktfunk_native import doctor

    for finding in doctor.findings(config):
        register(finding)


@hookimpl
def listening_ports(config: dict[str, Any], register: Any) -> None:
    from punktfunk_native import doctor

    for port in doctor.ports(config):
        register(port)
