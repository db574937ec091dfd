"""Host-wide event counters (bad input dropped, handshakes failed, sessions refused, ...).

Every protocol plane counts into the host's :class:`Counters` through its own
scope (``plane.count("tls_failed")`` is ``native.tls_failed`` here); the
plane's ``status()`` shows its scope, ``/metrics`` and ``host.metrics`` show
them all. Counting happens on rare events (bad packets, handshakes), never per
frame of a healthy stream, so a small lock is fine here.
"""

from __future__ import annotations

import re
import threading

_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"counter name {name!r} must be dotted lower-case words")
    return name


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (dotted lower-case, e.g. ``native.data.forged``)."""
        _checked(name)
        with self._lock:
            self._values[name] = self._values.get(name, 0) + n

    def get(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)

    def snapshot(self, prefix: str = "") -> dict[str, int]:
        """All counters, or those under ``prefix.`` with the prefix taken off."""
        with self._lock:
            if not prefix:
                return dict(sorted(self._values.items()))
            start = prefix + "."
            return {k[len(start):]: v for k, v in sorted(self._values.items()) if k.startswith(start)}

    def scope(self, prefix: str, *zeros: str) -> ScopedCounters:
        """The counters under ``prefix`` (a plane's name); ``zeros`` are shown as 0 from the start."""
        scoped = ScopedCounters(self, _checked(prefix))
        for name in zeros:
            scoped.inc(name, 0)
        return scoped


class ScopedCounters:
    """One part's view of the host's counters: ``inc("x")`` counts ``<prefix>.x``."""

    def __init__(self, counters: Counters, prefix: str) -> None:
        self._counters = counters
        self.prefix = prefix

    def inc(self, name: str, n: int = 1) -> None:
        self._counters.inc(f"{self.prefix}.{name}", n)

    def get(self, name: str) -> int:
        return self._counters.get(f"{self.prefix}.{name}")

    def snapshot(self) -> dict[str, int]:
        return self._counters.snapshot(self.prefix)
