"""One end of a punktfunk/1 control connection, for the host's plane and the client alike.

Messages are length-prefixed compact JSON (:func:`punktfunk_native.wire.encode_message`,
:class:`punktfunk_native.wire.MessageReader`) over the TLS connection. Reads
poll the socket with short timeouts, so the owner's loop stays responsive; a
write may take up to ``send_timeout``.
"""

from __future__ import annotations

import time
from typing import Any

from punktfunk_native.wire import MessageReader, encode_input_batch, encode_message

#: how long one control message may take to write
SEND_TIMEOUT_S = 5.0


class ControlChannel:
    """Framed control messages over a socket-like TLS connection (one thread at a time)."""

    def __init__(self, sock: Any, send_timeout: float = SEND_TIMEOUT_S) -> None:
        self.sock = sock
        self.send_timeout = send_timeout
        self.reader = MessageReader()
        #: messages read but not taken yet
        self.pending: list[dict[str, Any]] = []

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.settimeout(self.send_timeout)  # reads poll with short timeouts; a write may take longer
        self.sock.sendall(encode_message(msg))

    def send_input_batch(self, batch: bytes) -> None:
        """A binary input batch (punktfunk_native.input.encode_batch) as one frame."""
        self.sock.settimeout(self.send_timeout)
        self.sock.sendall(encode_input_batch(batch))

    def recv(self, timeout: float) -> dict[str, Any]:
        """The next message; TimeoutError after ``timeout``; EOFError when the peer closed."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no control message in time")
            self.sock.settimeout(min(left, 0.25))
            self.pending.extend(self.reader.read(self.sock))
        return self.pending.pop(0)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Every message there is, waiting at most ``timeout`` for one; EOFError when closed."""
        if self.pending:
            out, self.pending = self.pending, []
            return out
        self.sock.settimeout(timeout)
        return self.reader.read(self.sock)
