"""Rate and keyframe requests shared by the encoders.

Requests come from any thread (a protocol's control thread, the console);
the encode thread applies them before its next frame. The encoder sets
``_kbps``, ``_pending_kbps``, ``_rate_lock`` and ``_force_key`` in its
constructor and reads them in ``submit``.
"""

from __future__ import annotations

import threading


class PendingRequests:
    """Mixin: ``bitrate_kbps``, ``request_keyframe`` and ``set_bitrate`` of an Encoder."""

    backend: str = ""
    _kbps: int
    _pending_kbps: int | None
    _rate_lock: threading.Lock
    _force_key: bool

    @property
    def bitrate_kbps(self) -> int:
        return self._pending_kbps or self._kbps

    def request_keyframe(self) -> None:
        self._force_key = True

    def set_bitrate(self, kbps: int) -> None:
        kbps = int(kbps)
        if kbps <= 0:
            raise ValueError(f"{self.backend}: bitrate must be positive, not {kbps}")
        with self._rate_lock:
            self._pending_kbps = kbps
