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
from typing import Any

from punktfunk_core import hookimpl
from punktfunk_core.ipc import connect
from punktfunk_core.stages import StreamSpec

SECTION = "native"


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
    registry.add("packetizer", "native", _packetizer,
                 description="punktfunk/1: shards + Reed-Solomon GF(2^16) parity + AES-GCM per datagram")
    registry.add("sender", "native", _sender,
                 description="punktfunk/1: paced UDP, batched with GSO where the kernel supports it")


@hookimpl
def register_protocols(registry: Any) -> None:
    from punktfunk_native.server import NativePlane

    registry.add(SECTION, NativePlane)


@hookimpl
def config_schema(register: Any) -> None:
    from punktfunk_native.server import CONFIG_SCHEMA

    register(SECTION, CONFIG_SCHEMA)


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
