"""Protocol planes: a protocol's control plane, which builds sessions on the host."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from punktfunk_core.host import Host


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

    def __init__(self, host: Host) -> None:
        self.host = host
        #: this plane's counters in the host's (``<name>.<counter>`` in /metrics)
        self.counters = host.counters.scope(self.name, *self.counter_names)

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
