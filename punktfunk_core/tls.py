"""Server-side TLS that accepts any client certificate and leaves the verdict to the caller.

Both protocol planes trust devices, not issuers: a client certificate is self-signed, and a
device is paired when the SHA-256 fingerprint of its certificate is on the plane's paired list.
Python's ``ssl`` can only verify a client certificate against a trust store, and OpenSSL finds
an issuer by subject name, so of several self-signed certificates with one subject (every
Moonlight client is ``CN=NVIDIA GameStream Client``) only the first verifies. pyOpenSSL gives
``Context.set_verify`` a callback: ours accepts whatever chain the client presents (OpenSSL
still checks the handshake signature, so the client holds the certificate's key), and the plane
looks :attr:`TlsConnection.peer_fingerprint` up in its paired list for each connection, so a
pairing or an unpairing counts from the next connection on without rebuilding anything.

:class:`TlsConnection` runs OpenSSL over memory buffers and does all network I/O on the plain
socket, so it is socket-like enough for ``http.server`` and the punktfunk/1 control loop
(``recv``/``recv_into``/``sendall``/``makefile``/``settimeout``/``shutdown``/``close``), and a
timeout bounds each call as a whole: no peer can hold a thread longer than the timeout it set.
"""

from __future__ import annotations

import hashlib
import io
import socket
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

#: the lowest TLS version a server accepts, by name
TLS_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
_CHUNK = 16384  # one TLS record of plaintext


def cert_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as lowercase hex: how paired devices are named."""
    return hashlib.sha256(der).hexdigest()


class TlsError(OSError):
    """A TLS failure on an established connection (a bad record, an alert from the peer)."""


class HandshakeFailed(OSError):
    """The TLS handshake did not complete (bad hello, no certificate where one is required,
    a peer that went silent or away); the message says why in a few words."""


def _reason(exc: SSL.Error) -> str:
    """OpenSSL's error queue as a short line ("no certificate returned", …)."""
    errs = exc.args[0] if exc.args and isinstance(exc.args[0], list) else None
    if errs:
        return "; ".join(str(e[-1]) for e in errs if isinstance(e, tuple) and e) or str(exc)
    return str(exc) or type(exc).__name__


def _accept_any_certificate(_conn: SSL.Connection, _cert: Any, _errno: int, _depth: int, _ok: int) -> bool:
    return True  # who may do what is decided by fingerprint after the handshake


class TlsServer:
    """The server half of TLS for one listener: its certificate, the lowest version, and
    whether a client certificate is required (GameStream HTTPS) or optional (punktfunk/1,
    where a device without one may only pair)."""

    def __init__(self, cert_path: Path | str, key_path: Path | str, *, min_version: str,
                 require_client_cert: bool, session_id: bytes) -> None:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(TLS_VERSIONS[min_version])
        # renegotiation could swap the client certificate after it was looked up
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION)
        try:
            ctx.use_certificate_chain_file(str(cert_path))
            ctx.use_privatekey_file(str(key_path))
            ctx.check_privatekey()
        except SSL.Error as exc:
            raise ValueError(f"cannot use the TLS certificate {cert_path} / key {key_path}: {_reason(exc)}") from None
        mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if require_client_cert else 0)
        ctx.set_verify(mode, _accept_any_certificate)
        ctx.set_session_id(session_id)  # resumed sessions keep their client certificate
        self._ctx = ctx

    def accept(self, sock: socket.socket, timeout: float) -> TlsConnection:
        """Run the server handshake on a connected socket within ``timeout`` seconds.

        Raises :class:`HandshakeFailed`; the socket is the caller's to close then.
        """
        tls = SSL.Connection(self._ctx, None)  # memory BIOs: the socket stays ours
        tls.set_accept_state()
        conn = TlsConnection(sock, tls)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except SSL.WantReadError:
                    pass
                conn._flush(deadline)
                data = conn._recv_raw(deadline)
                if not data:
                    raise HandshakeFailed("the client closed the connection during the handshake")
                tls.bio_write(data)
            conn._flush(deadline)  # our last flight (and TLS 1.3 session tickets)
        except SSL.Error as exc:
            conn._flush_now()  # the alert tells the client why
            raise HandshakeFailed(_reason(exc)) from None
        except TimeoutError:
            raise HandshakeFailed(f"no TLS handshake within {timeout:g} s") from None
        except HandshakeFailed:
            raise
        except OSError as exc:
            raise HandshakeFailed(exc.strerror or str(exc)) from None
        conn._handshake_done()
        return conn


class TlsConnection:
    """A server-side TLS connection after its handshake; socket-like.

    One thread at a time (as for a socket). ``peer_cert_der`` / ``peer_fingerprint`` are the
    client's certificate, or None when it presented none.
    """

    def __init__(self, sock: socket.socket, tls: SSL.Connection) -> None:
        self._sock = sock
        self._tls = tls
        self._timeout: float | None = sock.gettimeout()
        self._eof = False
        self._closed = False
        self.peer_cert_der: bytes | None = None
        self.peer_fingerprint: str | None = None
        self.version = ""

    def _handshake_done(self) -> None:
        cert = self._tls.get_peer_certificate(as_cryptography=True)
        if cert is not None:
            self.peer_cert_der = cert.public_bytes(Encoding.DER)
            self.peer_fingerprint = cert_fingerprint(self.peer_cert_der)
        self.version = self._tls.get_protocol_version_name()

    # -- raw socket I/O under a deadline ---------------------------------------------------
    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _arm(self, deadline: float | None) -> None:
        if deadline is None:
            self._sock.settimeout(None)
            return
        left = deadline - time.monotonic()
        if left <= 0 and self._timeout != 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(max(left, 0.0))

    def _recv_raw(self, deadline: float | None) -> bytes:
        self._arm(deadline)
        return self._sock.recv(65536)

    def _flush(self, deadline: float | None) -> None:
        """Send what OpenSSL has queued for the peer."""
        while True:
            try:
                out = self._tls.bio_read(65536)
            except SSL.WantReadError:
                return
            self._arm(deadline)
            self._sock.sendall(out)

    def _flush_now(self) -> None:
        """Best effort, never waits: an alert or close_notify on the way out."""
        try:
            out = self._tls.bio_read(65536)
            self._sock.setblocking(False)
            self._sock.send(out)
        except (SSL.Error, OSError):
            pass

    # -- socket-like API -------------------------------------------------------------------
    @property
    def family(self) -> int:
        return self._sock.family

    def fileno(self) -> int:
        return self._sock.fileno()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes; b"" when the peer closed; TimeoutError after the timeout."""
        deadline = self._deadline()
        while True:
            try:
                return self._tls.recv(min(bufsize, _CHUNK * 4))
            except SSL.WantReadError:
                if self._eof:
                    return b""
            except (SSL.ZeroReturnError, SSL.SysCallError):
                return b""  # close_notify, or the peer just went away (as ssl's suppress_ragged_eofs)
            except SSL.Error as exc:
                if self._eof:
                    return b""  # OpenSSL 3 reports a bare EOF as "unexpected eof while reading"
                self._flush_now()
                raise TlsError(_reason(exc)) from None
            self._flush(deadline)  # e.g. an answer to the peer's key update
            data = self._recv_raw(deadline)
            if data:
                self._tls.bio_write(data)
            else:
                self._eof = True
                self._tls.bio_shutdown()

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        data = self.recv(min(nbytes or len(view), len(view)))
        view[: len(data)] = data
        return len(data)

    def sendall(self, data: Any, flags: int = 0) -> None:
        deadline = self._deadline()
        view = memoryview(data).cast("B")
        while view:
            try:
                n = self._tls.send(view[:_CHUNK])  # into memory: never waits
            except SSL.Error as exc:
                raise TlsError(_reason(exc)) from None
            view = view[n:]
            self._flush(deadline)

    def send(self, data: Any, flags: int = 0) -> int:
        self.sendall(data)
        return len(memoryview(data).cast("B"))

    def makefile(self, mode: str = "r", buffering: int | None = None, **_: Any) -> Any:
        """A binary file over the connection ("rb" or "wb"), as ``socket.makefile``."""
        raw = _TlsIO(self, "w" if "w" in mode else "r")
        if buffering == 0:
            return raw
        size = io.DEFAULT_BUFFER_SIZE if buffering is None or buffering < 0 else buffering
        return io.BufferedWriter(raw, size) if "w" in mode else io.BufferedReader(raw, size)

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        self._close_notify()
        self._sock.shutdown(how)

    def _close_notify(self) -> None:
        try:
            self._tls.shutdown()
        except SSL.Error:
            return
        self._flush_now()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_notify()
        self._sock.close()

    def __enter__(self) -> TlsConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _TlsIO(io.RawIOBase):
    def __init__(self, conn: TlsConnection, mode: str) -> None:
        super().__init__()
        self._conn = conn
        self._mode = mode

    def readable(self) -> bool:
        return self._mode == "r"

    def writable(self) -> bool:
        return self._mode == "w"

    def readinto(self, b: Any) -> int:
        return self._conn.recv_into(b)

    def write(self, b: Any) -> int:
        self._conn.sendall(b)
        return len(memoryview(b).cast("B"))

    def fileno(self) -> int:
        return self._conn.fileno()
