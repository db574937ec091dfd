"""Host-wide event counters (bad input dropped, sessions ended, ...).

Protocol parsers call ``host.counters.inc("gamestream.rtsp.bad_request")``
when they drop something; ``/metrics`` and ``punktfunk status`` show them.
Counting happens on rare events (bad packets, handshakes), never per frame of
a healthy stream, so a small lock is fine here.
"""

from __future__ import annotations

import re
import threading

_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (dotted lower-case, e.g. ``native.data.forged``)."""
        if not _NAME.match(name):
            raise ValueError(f"counter name {name!r} must be dotted lower-case words")
        with self._lock:
            self._values[name] = self._values.get(name, 0) + n

    def get(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._values.items()))
