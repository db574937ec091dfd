"""The host's side of the fleet: the ``_punktfunk._tcp`` mDNS record.

The host advertises ``_punktfunk._tcp`` through python-zeroconf (the library
the GameStream plane advertises ``_nvstream._tcp`` with), unless
``discovery.advertise = false``.
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

import ipaddress
import logging
import socket
import threading
from typing import Any

from punktfunk_core import __version__

log = logging.getLogger("punktfunk.fleet")

SERVICE_TYPE = "_punktfunk._tcp.local."

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
            return sorted({str(info[4][0]) for info in socket.getaddrinfo(bind, None, socket.AF_INET)})
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



Advertisement = tuple[int, list[str], dict[str, str]]


def advertisement(cfg: dict[str, Any], hostname: str, native_port: int | None) -> Advertisement | None:
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
