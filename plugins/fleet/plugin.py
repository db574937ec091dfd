"""Entry point of the fleet plugin (``punktfunk_fleet.plugin``, entry point ``fleet``).

Hosts advertise themselves over mDNS where their console listens
(:mod:`punktfunk_fleet.advertise`); ``punktfunk discover``
(:mod:`punktfunk_fleet.discover`) finds them and writes Prometheus file-based
service discovery for their ``/metrics``. Its config section is
``[discovery]``; it reads the ``console`` section (where to point a scraper)
and the native plane's status (its control port, for the TXT record), as any
plugin may read another's.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

from punktfunk_core import hookimpl

from punktfunk_fleet.advertise import Advertiser, advertisement
from punktfunk_fleet.discover import DISCOVER_SECONDS, cmd_discover

log = logging.getLogger("punktfunk.fleet")

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Announcing this host on the LAN (mDNS), for `punktfunk discover` and fleet monitoring.",
    "additionalProperties": False,
    "properties": {
        "advertise": {"type": "boolean", "default": True,
                      "description": "advertise _punktfunk._tcp via mDNS where the console listens "
                                     "(a loopback console: on loopback only)"},
    },
}


_advertisers: dict[int, Advertiser] = {}


@hookimpl
def config_schema(register: Callable[[str, dict[str, Any]], None]) -> None:
    register("discovery", SCHEMA)


@hookimpl
def host_started(host: Any) -> None:
    native = host.planes.get("native")
    status = native.status() if native is not None and hasattr(native, "status") else {}
    native_port = status.get("port") if isinstance(status, dict) else None
    ad = advertisement(host.config, host.hostname, native_port)
    if ad is None:
        log.info("mDNS: not advertising this host (discovery.advertise = false, or no console to point at)")
        return
    port, addresses, props = ad
    if not addresses:
        log.warning("mDNS: the console's bind address has no IPv4 address to advertise")
        return
    _advertisers[id(host)] = Advertiser(host.hostname, port, addresses, props)


@hookimpl
def host_stopping(host: Any) -> None:
    ad = _advertisers.pop(id(host), None)
    if ad is not None:
        ad.close()


@hookimpl
def cli_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("discover", help="list punktfunk hosts on the LAN (mDNS)",
                              description="Browses _punktfunk._tcp and lists the hosts that answer; "
                                          "--prometheus-sd writes their /metrics endpoints for Prometheus.")
    p.add_argument("--seconds", type=float, default=DISCOVER_SECONDS, help="how long to listen (default 3)")
    p.add_argument("--interface", action="append", metavar="ADDR",
                   help="listen only on the interface with this IPv4 address (repeatable; default all)")
    p.add_argument("--prometheus-sd", metavar="FILE", help="write Prometheus file_sd JSON of their /metrics")
    p.add_argument("--json", action="store_true", help="print the hosts as JSON")
    p.set_defaults(func=cmd_discover)
