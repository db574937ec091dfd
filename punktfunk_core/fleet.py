"""Fleet: hosts advertise themselves over mDNS; ``punktfunk discover`` finds them and writes
Prometheus file-based service discovery for their ``/metrics``.

A builtin plugin like any other (entry point ``fleet``). The host advertises
``_punktfunk._tcp`` through python-zeroconf (the library the GameStream plane
advertises ``_nvstream._tcp`` with), unless ``discovery.advertise = false``.
The record names the console, since that is where a scraper goes: its port
and, in the TXT record, ``metrics=/metrics``, the version and the native
control port. It is advertised where the console listens: a loopback console
(the default) on the loopback interface only, so nothing leaves the machine;
a console bound to one address on that address; ``0.0.0.0`` on every
non-loopback IPv4 address. A host without a console is not advertised:
the record exists for the scraper, and nothing else may leave the machine
unasked.

Registration probes the network for a second or two, so it runs on a thread
of its own; the host never waits for it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from punktfunk_core import __version__, hookimpl
from punktfunk_core.paths import atomic_write

log = logging.getLogger("punktfunk.fleet")

SERVICE_TYPE = "_punktfunk._tcp.local."
DISCOVER_SECONDS = 3.0

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


# -- advertising (in the host) ----------------------------------------------------------
def _ipv4s_beyond_loopback() -> list[str]:
    import ifaddr  # a dependency of zeroconf

    found = {ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
             if isinstance(ip.ip, str) and not ip.ip.startswith("127.")}
    return sorted(found)


def advertised_addresses(bind: str) -> list[str]:
    """The IPv4 addresses a service listening on ``bind`` is reachable at."""
    try:
        addr = ipaddress.ip_address(bind)
    except ValueError:  # a name: whatever it resolves to
        try:
            return sorted({info[4][0] for info in socket.getaddrinfo(bind, None, socket.AF_INET)})
        except OSError:
            return []
    if addr.is_unspecified:
        return _ipv4s_beyond_loopback() or ["127.0.0.1"]
    if addr.version != 4:
        return []
    return [str(addr)]


class Advertiser:
    """One mDNS registration, made on a thread, withdrawn by :meth:`close`."""

    def __init__(self, name: str, port: int, addresses: list[str], properties: dict[str, str]) -> None:
        self.name, self.port, self.addresses, self.properties = name, port, addresses, properties
        self._zc: Any = None
        self._lock = threading.Lock()
        self._closed = False
        self.registered = threading.Event()
        self._thread = threading.Thread(target=self._register, name="mdns-advertise", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        try:
            from zeroconf import IPVersion, ServiceInfo, Zeroconf

            label = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.name)[:60] or "punktfunk"
            info = ServiceInfo(SERVICE_TYPE, f"{label}.{SERVICE_TYPE}", port=self.port,
                               addresses=[socket.inet_aton(a) for a in self.addresses],
                               properties=self.properties, server=f"{label}.local.")
            with self._lock:
                if self._closed:
                    return
                self._zc = Zeroconf(interfaces=self.addresses, ip_version=IPVersion.V4Only)
            self._zc.register_service(info, allow_name_change=True)
            self.registered.set()
            log.info("mDNS: advertising %s (port %d) on %s", info.name, self.port, ", ".join(self.addresses))
        except Exception as exc:  # noqa: BLE001 - discovery is optional; the host serves without it
            log.warning("mDNS advertisement failed (`punktfunk discover` will not list this host): %s", exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            zc, self._zc = self._zc, None
        self._thread.join(5.0)
        zc = zc or self._zc
        if zc is not None:
            try:
                zc.unregister_all_services()
                zc.close()
            except Exception:  # noqa: BLE001
                log.debug("zeroconf close failed", exc_info=True)


_advertisers: dict[int, Advertiser] = {}


def advertisement(cfg: dict[str, Any], hostname: str, native_port: int | None) -> tuple[int, list[str], dict[str, str]] | None:
    """(port, addresses, TXT) this host advertises with ``cfg``, or None when it advertises nothing."""
    if not cfg.get("discovery", {}).get("advertise", True):
        return None
    console = cfg.get("console", {})
    props = {"version": __version__, "hostname": hostname}
    if native_port:
        props["native"] = str(native_port)
    if not (console.get("enabled") and console.get("port")):
        return None
    props["metrics"] = "/metrics"
    return int(console["port"]), advertised_addresses(str(console.get("bind", "127.0.0.1"))), props


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


# -- discovering (the CLI) ----------------------------------------------------------------
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


@hookimpl
def cli_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("discover", help="list punktfunk hosts on the LAN (mDNS)",
                              description="Browses _punktfunk._tcp and lists the hosts that answer; "
                                          "--prometheus-sd writes their /metrics endpoints for Prometheus.")
    p.add_argument("--seconds", type=float, default=DISCOVER_SECONDS, help="how long to listen (default 3)")
    p.add_argument("--interface", action="append", metavar="ADDR",
                   help="listen only on the interface with this IPv4 address (repeatable; default all)")
    p.add_argument("--prometheus-sd", metavar="FILE", help="write Prometheus file_sd JSON of their /metrics")
    p.add_argument("--json", action="store_true", help="print the hosts as JSON")
    p.set_defaults(func=cmd_discover)
