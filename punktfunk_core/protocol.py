"""Protocol planes: a protocol's control plane, which builds sessions on the host.

A plane is also how the host pairs clients of its protocol: the pairing
contract below (PIN, paired clients, their permissions) is what the core's
``pairing.*`` IPC commands, ``punktfunk pairing`` and the console's pairing
page use for every protocol alike (docs/plugins.md, "The pairing contract").
"""

from __future__ import annotations

import abc
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from punktfunk_core.identity import AmbiguousClient, PairedClients, UnknownClient
from punktfunk_core.ipc import IpcError

if TYPE_CHECKING:
    from punktfunk_core.host import Host

log = logging.getLogger("punktfunk.pairing")

#: the operator chooses a PIN and opens a pairing window; the client enters the same PIN
PIN_FROM_HOST = "host"
#: the client shows a PIN while it waits; the operator enters it on the host
PIN_FROM_CLIENT = "client"


class ProtocolPlane(abc.ABC):
    """Base class for a protocol plugin's plane.

    The host constructs it with ``factory(host)`` (see the
    ``register_protocols`` hook), calls :meth:`start` when the protocol's
    config section has ``enabled = true`` and :meth:`stop` on shutdown. The
    plane accepts clients and calls :meth:`Host.start_session` for each.
    """

    #: protocol name = its config section = the ``kind`` of its sessions
    name: str = ""

    #: counters shown as 0 before their first event (status and /metrics list them from the start)
    counter_names: tuple[str, ...] = ()

    #: who types the PIN when a client pairs: PIN_FROM_HOST or PIN_FROM_CLIENT (None: no pairing)
    pin_from: ClassVar[str | None] = None

    def __init__(self, host: Host) -> None:
        self.host = host
        #: this plane's counters in the host's (``<name>.<counter>`` in /metrics)
        self.counters = host.counters.scope(self.name, *self.counter_names)
        #: the paired clients (punktfunk_core.identity), set by a pairing plane in start()
        self.paired: PairedClients | None = None

    def count(self, name: str, n: int = 1) -> None:
        """Count an event of this plane (bad input dropped, a handshake failed, ...)."""
        self.counters.inc(name, n)

    @property
    def config(self) -> dict[str, Any]:
        return self.host.config.get(self.name, {})

    @abc.abstractmethod
    def start(self) -> None:
        """Open listening sockets and threads. Raise to refuse starting (logged)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Close everything; must return within about a second."""

    def status(self) -> dict[str, Any]:
        """Shown by ``punktfunk status`` and the console (ports, pairing state...)."""
        return {}

    # -- the pairing contract ----------------------------------------------------------
    # Handlers run on the IPC thread; they raise IpcError for what the operator should see.

    def pairing_status(self) -> dict[str, Any]:
        """The pairing state in a few facts: ``open`` and ``expires_in_s`` of a
        PIN window (PIN_FROM_HOST), ``waiting`` ({device, waiting_s} or None)
        for a client that shows its PIN (PIN_FROM_CLIENT)."""
        return {}

    def open_pairing(self, pin: str, seconds: float) -> dict[str, Any]:
        """PIN_FROM_HOST: let a client pair with ``pin`` for ``seconds``."""
        raise IpcError(409, f"protocol {self.name!r} takes no PIN window (its clients show their PIN)")

    def submit_pin(self, pin: str) -> dict[str, Any]:
        """PIN_FROM_CLIENT: the PIN the waiting client shows, typed by the operator."""
        raise IpcError(409, f"protocol {self.name!r} has no client waiting for a PIN (open a pairing window)")

    def paired_store(self) -> PairedClients:
        if self.paired is None:
            raise IpcError(501, f"protocol {self.name!r} does not pair clients")
        return self.paired

    def paired_clients(self) -> list[dict[str, Any]]:
        """The paired clients: fingerprint, name, paired_unix_ms, view_only."""
        return [c.info() for c in self.paired_store().list()]

    def find_client(self, fingerprint: Any) -> str:
        """The full fingerprint of the one client ``fingerprint`` (8+ hex digits) names."""
        try:
            return self.paired_store().find(fingerprint)
        except UnknownClient as exc:
            raise IpcError(404, str(exc)) from None
        except AmbiguousClient as exc:
            raise IpcError(409, str(exc)) from None
        except ValueError as exc:
            raise IpcError(400, str(exc)) from None

    def unpair(self, fingerprint: Any = None, *, everyone: bool = False) -> dict[str, Any]:
        """Forget one client (or all): it must pair again, from its next connection on."""
        store = self.paired_store()
        if everyone:
            gone = [c.fingerprint for c in store.list()]
            store.clear()
        else:
            gone = [self.find_client(fingerprint)]
            store.remove(gone[0])
        for fp in gone:
            log.info("%s: unpaired client %s…", self.name, fp[:16])
        return {"removed": len(gone), "unpaired": gone}

    def set_permissions(self, fingerprint: Any, *, view_only: bool) -> dict[str, Any]:
        """Change what a paired client may do; returns its entry."""
        return self.paired_store().set_view_only(self.find_client(fingerprint), view_only).info()
