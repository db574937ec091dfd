"""systemd's readiness and watchdog protocol (sd_notify), for ``Type=notify`` units.

The protocol is one datagram per message, ``KEY=value`` lines, sent to the
unix socket named by ``$NOTIFY_SOCKET`` (a path, or an abstract name written
with a leading ``@``). ``READY=1`` once the host serves, ``STATUS=`` a line
``systemctl status`` shows, ``WATCHDOG=1`` at least every ``$WATCHDOG_USEC``
(we send at half of it, as sd_watchdog_enabled(3) advises), ``STOPPING=1``
when shutting down. Twenty lines of our own instead of a dependency.

:func:`from_env` takes the variables out of the environment (like
``sd_notify(unset_environment=1)``): the console's gunicorn, a child of the
host, speaks sd_notify too and must not report readiness in the host's name.
Without ``$NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, MutableMapping

log = logging.getLogger("punktfunk.sdnotify")


class Notifier:
    """Sends sd_notify messages to one socket; never raises (systemd gone is not our failure)."""

    def __init__(self, address: str = "", watchdog_usec: int = 0) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: str | int) -> bool:
        """``notify(READY=1, STATUS="…")``; whether the datagram went out."""
        if self._sock is None:
            return False
        text = "\n".join(f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items())
        try:
            self._sock.sendto(text.encode(), self.address)
            return True
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False

    def ready(self, status: str = "") -> None:
        self.notify(READY=1, **({"STATUS": status} if status else {}))

    def start_watchdog(self, healthy: Callable[[], bool]) -> None:
        """Send ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` while ``healthy()``; a host that stops
        being healthy stops feeding the watchdog, so systemd restarts it."""
        if self._sock is None or self.watchdog_usec <= 0 or self._thread is not None:
            return
        interval = self.watchdog_usec / 2e6

        def feed() -> None:
            while not self._stop.wait(interval):
                if healthy():
                    self.notify(WATCHDOG=1)
                else:
                    log.error("host unhealthy: the systemd watchdog is no longer fed")

        self._thread = threading.Thread(target=feed, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stopping(self, status: str = "") -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def from_env(environ: MutableMapping[str, str] | None = None) -> Notifier:
    """A notifier for ``$NOTIFY_SOCKET`` (a no-op one without it); the variables are removed
    from ``environ`` so that child processes do not inherit them."""
    env = os.environ if environ is None else environ
    address = env.pop("NOTIFY_SOCKET", "")
    usec_text = env.pop("WATCHDOG_USEC", "")
    pid_text = env.pop("WATCHDOG_PID", "")
    try:
        usec = int(usec_text) if usec_text else 0
        if pid_text and int(pid_text) != os.getpid():
            usec = 0  # the watchdog is meant for another process of this unit
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", usec_text, pid_text)
        usec = 0
    if address and not (address.startswith("/") or address.startswith("@")):
        log.warning("ignoring NOTIFY_SOCKET=%r: neither a path nor an abstract socket name", address)
        address = ""
    return Notifier(address, max(0, usec))
