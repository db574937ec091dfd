"""The fleet's side: ``punktfunk discover`` browses ``_punktfunk._tcp`` and
writes Prometheus file-based service discovery for the hosts' ``/metrics``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from punktfunk_core.paths import atomic_write

from punktfunk_fleet.advertise import SERVICE_TYPE

DISCOVER_SECONDS = 3.0


@dataclass
class FoundHost:
    """One advertised host, as ``punktfunk discover`` reports it."""

    name: str
    addresses: list[str]
    port: int
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def metrics_url(self) -> str:
        path = self.properties.get("metrics", "")
        return f"http://{self.addresses[0]}:{self.port}{path}" if path and self.addresses else ""


def discover(seconds: float = DISCOVER_SECONDS, interfaces: list[str] | None = None) -> list[FoundHost]:
    """Browse ``_punktfunk._tcp`` for ``seconds``; every host that answered, by name."""
    from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceListener, Zeroconf

    names: set[str] = set()

    class Listener(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            names.add(name)

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            names.add(name)

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            names.discard(name)

    zc = Zeroconf(interfaces=interfaces or InterfaceChoice.All, ip_version=IPVersion.V4Only)
    found: list[FoundHost] = []
    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, Listener())
        time.sleep(seconds)
        for name in sorted(names):
            info = zc.get_service_info(SERVICE_TYPE, name, timeout=1500)
            if info is None or not info.port:
                continue
            props = {(k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)):
                     (v.decode("utf-8", "replace") if isinstance(v, bytes) else "") for k, v in info.properties.items()}
            found.append(FoundHost(name.removesuffix("." + SERVICE_TYPE), info.parsed_addresses(IPVersion.V4Only),
                                   int(info.port), props))
        browser.cancel()
    finally:
        zc.close()
    return found


def prometheus_targets(hosts: list[FoundHost]) -> list[dict[str, Any]]:
    """Prometheus file_sd: one target group per host that serves ``/metrics``."""
    groups = []
    for h in hosts:
        if not h.metrics_url:
            continue
        groups.append({"targets": [f"{h.addresses[0]}:{h.port}"],
                       "labels": {"__metrics_path__": h.properties["metrics"], "punktfunk_host": h.name,
                                  "punktfunk_version": h.properties.get("version", "")}})
    return groups


def write_file_sd(path: Path, hosts: list[FoundHost]) -> int:
    """Write the file_sd JSON atomically (Prometheus re-reads it on change; never half a file). Targets written."""
    groups = prometheus_targets(hosts)
    atomic_write(Path(path), (json.dumps(groups, indent=2) + "\n").encode(), 0o644)
    return len(groups)


def cmd_discover(args: argparse.Namespace) -> int:
    hosts = discover(args.seconds, args.interface or None)
    if args.prometheus_sd:
        n = write_file_sd(Path(args.prometheus_sd), hosts)
        print(f"wrote {n} target{'s' if n != 1 else ''} to {args.prometheus_sd}", file=sys.stderr)
    if args.json:
        print(json.dumps([{**asdict(h), "metrics_url": h.metrics_url} for h in hosts], indent=2))
        return 0
    if not hosts:
        print("no punktfunk hosts answered (is mDNS/UDP 5353 allowed, and discovery.advertise on?)", file=sys.stderr)
        return 0
    for h in hosts:
        print(f"{h.name:<24} {','.join(h.addresses):<18} {h.port:<6} {h.properties.get('version', ''):<8} "
              f"{h.metrics_url or '(no console)'}")
    return 0
