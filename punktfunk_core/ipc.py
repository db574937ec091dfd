"""The host's IPC channel: JSON commands over a ZMQ ``ipc://`` socket.

The socket lives in the owner-only runtime directory, so other users cannot
reach it. Plugins add commands with the ``ipc_commands`` hook. Requests are
parsed by the bounded loader (:mod:`punktfunk_core.boundedjson`): a request
that is too large, too deep or not JSON gets a 400, and nothing a request
holds can end the channel's thread.

Plugins and CLI commands reach the host with :func:`connect` (the endpoint
of this user's host, ``$PUNKTFUNK_IPC`` overriding it) and
``IpcClient.call(cmd, **args)``; a command function of the ``punktfunk`` CLI
may let :class:`IpcError` propagate: the CLI prints its message and exits 1.

Wire format (one ZMQ message each way)::

    request  {"cmd": "stats.status", "args": {...}}
    reply    {"ok": true, "result": ...}
           | {"ok": false, "code": 404, "error": "recording not found"}
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from punktfunk_core import boundedjson
from punktfunk_core.paths import Paths

log = logging.getLogger("punktfunk.ipc")

MAX_REQUEST_BYTES = 1 << 20  # requests are small; refuse anything larger unread
DEFAULT_TIMEOUT_S = 1.5  # the console answers 503 well inside 2 s
#: what a command-line caller waits for an answer
CLI_TIMEOUT_S = 2.0


class IpcError(Exception):
    """A command failed in a way the caller should see (``code`` is HTTP-like)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message


class HostUnreachable(IpcError):
    def __init__(self, message: str = "the punktfunk host is not reachable (is `punktfunk serve` running?)") -> None:
        super().__init__(503, message)


Handler = Callable[[dict[str, Any]], Any]


class IpcServer:
    """Serves registered commands on one thread (ROUTER socket)."""

    def __init__(self, endpoint: str, handlers: dict[str, Handler]) -> None:
        self.endpoint = endpoint
        self.handlers = dict(handlers)
        self.bad_requests = 0
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="ipc", daemon=True)
        self._thread.start()
        self._ready.wait(5)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def dispatch(self, raw: bytes) -> dict[str, Any]:
        """Handle one raw request; never raises."""
        try:
            req = boundedjson.loads(raw, max_bytes=MAX_REQUEST_BYTES)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError("request must be an object with a string 'cmd'")
            args = req.get("args") or {}
            if not isinstance(args, dict):
                raise ValueError("'args' must be an object")
        except ValueError as exc:  # JsonRefused is one
            self.bad_requests += 1
            return {"ok": False, "code": 400, "error": f"bad request: {exc}"}
        handler = self.handlers.get(req["cmd"])
        if handler is None:
            return {"ok": False, "code": 404, "error": f"unknown command {req['cmd']!r}"}
        try:
            return {"ok": True, "result": handler(args)}
        except IpcError as exc:
            return {"ok": False, "code": exc.code, "error": exc.message}
        except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the channel
            log.exception("IPC command %s failed", req["cmd"])
            return {"ok": False, "code": 500, "error": f"{req['cmd']} failed: {type(exc).__name__}: {exc}"}

    def _answer(self, body: bytes) -> bytes:
        """The serialised reply to one request; whatever happens, an answer."""
        try:
            return json.dumps(self.dispatch(body), separators=(",", ":"), allow_nan=False).encode()
        except Exception as exc:  # noqa: BLE001 - e.g. a result that is not JSON: the channel goes on
            log.error("IPC reply not serialisable: %s: %s", type(exc).__name__, exc)
            return json.dumps({"ok": False, "code": 500,
                               "error": f"reply not serialisable: {type(exc).__name__}: {exc}"}).encode()

    def _serve(self) -> None:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            if self.endpoint.startswith("ipc://"):
                path = Path(self.endpoint[len("ipc://"):])
                if path.exists():
                    path.unlink()  # stale socket of a previous host
                old_umask = os.umask(0o077)
                try:
                    sock.bind(self.endpoint)
                finally:
                    os.umask(old_umask)
                os.chmod(path, 0o600)
            else:
                sock.bind(self.endpoint)
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()
            sock.close()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                if len(frames) < 3:
                    self.bad_requests += 1
                    continue
                ident, body = frames[0], frames[-1]
                sock.send_multipart([ident, b"", self._answer(body)])
        finally:
            sock.close()
            if self.endpoint.startswith("ipc://"):
                try:
                    Path(self.endpoint[len("ipc://"):]).unlink()
                except FileNotFoundError:
                    pass


class IpcClient:
    """Calls host commands. Thread-safe: each thread gets its own socket.

    A call that gets no answer within ``timeout`` raises :class:`HostUnreachable`
    (the socket is then discarded, so the next call starts clean).
    """

    def __init__(self, endpoint: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._local = threading.local()

    def _socket(self) -> zmq.Socket:
        sock = getattr(self._local, "sock", None)
        if sock is None or getattr(self._local, "pid", None) != os.getpid():
            sock = self._ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            ms = int(self.timeout * 1000)
            sock.setsockopt(zmq.RCVTIMEO, ms)
            sock.setsockopt(zmq.SNDTIMEO, ms)
            sock.connect(self.endpoint)
            self._local.sock = sock
            self._local.pid = os.getpid()
        return sock

    def _discard(self) -> None:
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            sock.close(0)
        self._local.sock = None

    def call(self, cmd: str, **args: Any) -> Any:
        if self.endpoint.startswith("ipc://") and not os.path.exists(self.endpoint[len("ipc://"):]):
            raise HostUnreachable()
        sock = self._socket()
        try:
            sock.send(json.dumps({"cmd": cmd, "args": args}).encode())
            raw = sock.recv()
        except zmq.Again:
            self._discard()
            raise HostUnreachable() from None
        except zmq.ZMQError as exc:
            self._discard()
            raise HostUnreachable(f"the punktfunk host is not reachable: {exc}") from None
        reply = json.loads(raw)
        if reply.get("ok"):
            return reply.get("result")
        raise IpcError(int(reply.get("code", 500)), str(reply.get("error", "unknown error")))

    def close(self) -> None:
        self._discard()


def host_endpoint(paths: Paths | None = None) -> str:
    """The IPC endpoint of this user's host: ``$PUNKTFUNK_IPC``, else the socket in
    the runtime directory (of ``paths``, or of the environment)."""
    return os.environ.get("PUNKTFUNK_IPC") or (paths or Paths.from_env()).ipc_endpoint


def connect(timeout: float = CLI_TIMEOUT_S, paths: Paths | None = None) -> IpcClient:
    """A client of this user's host, for plugins and CLI commands (see :func:`host_endpoint`)."""
    return IpcClient(host_endpoint(paths), timeout=timeout)
