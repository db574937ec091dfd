"""The measurement gate: whether the pipeline runner takes timestamps.

``measuring`` is a plain attribute the runner reads once per frame (no lock,
no call). It is true while ``PUNKTFUNK_PERF`` is set or any consumer (the stats
recorder, a benchmark) is armed. Arming and disarming take a lock; reading
never does.
"""

from __future__ import annotations

import os
import threading


def perf_env_enabled(environ: dict[str, str] | None = None) -> bool:
    v = (environ if environ is not None else os.environ).get("PUNKTFUNK_PERF", "")
    return v.strip().lower() not in ("", "0", "false", "no", "off")


class MeasurementGate:
    def __init__(self, perf: bool | None = None) -> None:
        self.perf: bool = perf_env_enabled() if perf is None else perf
        self._consumers: set[str] = set()
        self._lock = threading.Lock()
        #: read by the runner once per frame
        self.measuring: bool = self.perf

    def arm(self, consumer: str) -> None:
        """Turn measurement on for ``consumer`` (idempotent)."""
        with self._lock:
            self._consumers.add(consumer)
            self.measuring = True

    def disarm(self, consumer: str) -> None:
        """Withdraw ``consumer``; measurement stays on while others or PERF remain."""
        with self._lock:
            self._consumers.discard(consumer)
            self.measuring = self.perf or bool(self._consumers)

    @property
    def consumers(self) -> frozenset[str]:
        return frozenset(self._consumers)
