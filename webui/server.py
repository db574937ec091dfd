"""Running the console under gunicorn.

:func:`start_console` is what ``punktfunk serve`` and ``punktfunk console``
call: it creates the admin token if needed, binds the listening socket itself
(so a busy port is a clear error at once, and port 0 gets a free port with no
race), and starts ``python -m gunicorn`` as a child that inherits the socket
(``--bind fd://N``). gunicorn runs in its own process group, which
:meth:`ConsoleHandle.stop` signals as a whole; and it watches its parent, so a
parent killed without a chance to stop it (SIGKILL) takes it down within a
second (:mod:`punktfunk_webui.gunicorn_conf`).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from punktfunk_core.paths import Paths

from punktfunk_webui.auth import TokenStore
from punktfunk_webui.gunicorn_conf import PARENT_ENV

log = logging.getLogger("punktfunk.console")

#: the validated config as JSON, for the workers (read by punktfunk_webui.wsgi)
CONFIG_ENV = "PUNKTFUNK_CONSOLE_CONFIG"
DEFAULT_PORT = 47990
DEFAULT_WORKERS = 2
STOP_GRACE_S = 2.0


class ConsoleError(RuntimeError):
    pass


def _console_section(cfg: dict[str, Any]) -> dict[str, Any]:
    c = dict(cfg.get("console", {}) or {})
    c.setdefault("bind", "127.0.0.1")
    c.setdefault("port", DEFAULT_PORT)
    c.setdefault("workers", DEFAULT_WORKERS)
    return c


def _listen(bind: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = " (another console or program uses it; set console.port or --console-port)" if port else ""
        raise ConsoleError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(True)
    return sock


def _connect_host(bind: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bind, bind)


def _url(bind: str, port: int) -> str:
    host = _connect_host(bind)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _child_env(cfg: dict[str, Any], paths: Paths, parent: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PUNKTFUNK_CONFIG_DIR"] = str(paths.config)
    env["PUNKTFUNK_RUNTIME_DIR"] = str(paths.runtime)
    env[CONFIG_ENV] = json.dumps(cfg)
    env[PARENT_ENV] = str(parent)
    return env


def _argv(fd: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn",
        "--config", "python:punktfunk_webui.gunicorn_conf",
        "--workers", str(workers),
        "--bind", f"fd://{fd}",
        "punktfunk_webui.wsgi:app",
    ]


@dataclass
class ConsoleHandle:
    """A running console: ``url`` to open, ``stop()`` to end it."""

    proc: subprocess.Popen
    url: str
    workers: int
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = STOP_GRACE_S) -> int:
        """SIGTERM gunicorn's process group (master and workers), wait up to
        ``grace`` s for the master, then SIGKILL the group."""
        if self._stopped or self.proc.poll() is not None:
            self._stopped = True
            return self.proc.returncode if self.proc.returncode is not None else 0
        self._stopped = True
        try:
            try:  # the master is not reaped yet, so the group id cannot have been reused
                os.killpg(self.proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("console (pid %s) did not stop within %.0f s; killing it", self.proc.pid, grace)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            return self.proc.wait()


def _wait_ready(handle: ConsoleHandle, host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not handle.alive():
            raise ConsoleError(f"the console exited with status {handle.proc.returncode} while starting "
                               "(its errors are above)")
        conn = http.client.HTTPConnection(host, port, timeout=1.0)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    handle.stop()
    raise ConsoleError(f"the console did not answer on port {port} within {timeout:.0f} s")


def start_console(cfg: dict[str, Any], paths: Paths, *, ready_timeout: float = 30.0) -> ConsoleHandle:
    """Start the console under gunicorn as a child of this process; returns once it answers."""
    c = _console_section(cfg)
    TokenStore(paths.config).ensure_admin_token()
    sock = _listen(c["bind"], int(c["port"]))
    port = sock.getsockname()[1]
    workers = max(1, int(c["workers"]))
    try:
        proc = subprocess.Popen(
            _argv(sock.fileno(), workers),
            env=_child_env(cfg, paths, os.getpid()),
            pass_fds=(sock.fileno(),),
            stdin=subprocess.DEVNULL,
            # its own group: stop() signals master and workers together, and a terminal's
            # Ctrl-C reaches only us (who stop it in order), not gunicorn behind our back
            start_new_session=True,
        )
    finally:
        sock.close()  # gunicorn holds its own copy
    handle = ConsoleHandle(proc, _url(c["bind"], port), workers)
    _wait_ready(handle, _connect_host(c["bind"]), port, ready_timeout)
    log.debug("console on %s (%d gunicorn workers, pid %s)", handle.url, workers, proc.pid)  # callers print the URL
    return handle
