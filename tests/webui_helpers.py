"""Helpers for the console tests (owned by the webui area)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from punktfunk_core.paths import Paths

from punktfunk_webui.auth import TokenStore


def paths_of(dirs: dict[str, Path]) -> Paths:
    return Paths(config=dirs["config"], runtime=dirs["runtime"]).ensure()


def admin_token(paths: Paths) -> str:
    return TokenStore(paths.config).ensure_admin_token()


def console_cfg(port: int = 0, workers: int = 2, **extra: Any) -> dict[str, Any]:
    return {"console": {"enabled": True, "bind": "127.0.0.1", "port": port, "workers": workers, **extra}}


_CONVERTER_SAMPLES = {"int": "1", "float": "1.5", "path": "x/y", "uuid": "00000000-0000-0000-0000-000000000000"}


def sample_url(rule: str) -> str:
    """A concrete URL for a Flask rule: each <converter:name> gets a sample value."""

    def sub(m: re.Match[str]) -> str:
        conv = m.group(1) or "string"
        return _CONVERTER_SAMPLES.get(conv, "sample")

    return re.sub(r"<(?:([a-z]+)(?:\([^)]*\))?:)?[A-Za-z_][A-Za-z0-9_]*>", sub, rule)


class UdpSink:
    """A UDP socket that swallows what a loopback session sends."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def drain(self) -> int:
        n = 0
        while True:
            try:
                self.sock.recv(65536)
                n += 1
            except BlockingIOError:
                return n

    def close(self) -> None:
        self.sock.close()


def wait_for(pred: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def iter_rules(app: Any) -> Iterator[Any]:
    yield from sorted(app.url_map.iter_rules(), key=lambda r: r.rule)


def run_cli_to_exit(args: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int | None, str]:
    """Run `punktfunk ARGS` until it exits: (exit status, stdout+stderr); None when it
    was still running after ``timeout`` s (then it is killed)."""
    proc = subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out
    return proc.returncode, out
