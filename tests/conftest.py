"""Shared fixtures: real host processes on private config/runtime directories."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from punktfunk_core.ipc import HostUnreachable, IpcClient

REPO = Path(__file__).resolve().parent.parent
OUTPUT_DIR = REPO / "test-output"


@pytest.fixture
def pf_dirs() -> Iterator[dict[str, Path]]:
    """A private config dir and a short runtime dir (unix socket paths are limited)."""
    base = Path(tempfile.mkdtemp(prefix="pf-"))
    dirs = {"base": base, "config": base / "cfg", "runtime": base / "run"}
    yield dirs
    shutil.rmtree(base, ignore_errors=True)


def pf_env(dirs: dict[str, Path], **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PUNKTFUNK_CONFIG_DIR"] = str(dirs["config"])
    env["PUNKTFUNK_RUNTIME_DIR"] = str(dirs["runtime"])
    env.pop("PUNKTFUNK_IPC", None)
    env.update(extra)
    return env


def _plugin_enabled(name: str, env: dict[str, str]) -> bool:
    def names(var: str) -> set[str] | None:
        raw = env.get(var)
        return None if raw is None else {p.strip() for p in raw.split(",") if p.strip()}

    allow, block = names("PUNKTFUNK_LOAD_PLUGINS"), names("PUNKTFUNK_DISABLE_PLUGINS") or set()
    return name not in block and (allow is None or name in allow)


class HostProcess:
    """A real ``punktfunk serve`` process."""

    def __init__(self, dirs: dict[str, Path], config: str = "", args: list[str] | None = None,
                 env: dict[str, str] | None = None, console: bool = False) -> None:
        self.dirs = dirs
        self.config_path = dirs["base"] / "host.toml"
        self.env = pf_env(dirs, **(env or {}))
        if "[native]" not in config and _plugin_enabled("native", self.env):
            # test hosts never take the fixed default port (a real host may run beside the suite)
            config += "\n[native]\nport = 0\n"
        self.config_path.write_text(config)
        self.args = list(args or [])
        if not console:
            self.args.append("--no-console")
        self.log_path = dirs["base"] / f"host-{int(time.time() * 1000)}.log"
        self.proc: subprocess.Popen | None = None
        self.ipc = IpcClient(f"ipc://{dirs['runtime'] / 'host.sock'}", timeout=2.0)

    def start(self, timeout: float = 20.0) -> HostProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "punktfunk_core.cli", "serve", "-c", str(self.config_path), *self.args],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"host exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.ipc.call("host.status")
                return self
            except HostUnreachable:
                time.sleep(0.1)
        raise RuntimeError(f"host did not answer IPC within {timeout}s:\n{self.log()}")

    def call(self, cmd: str, **args: Any) -> Any:
        return self.ipc.call(cmd, **args)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"host did not stop within {timeout}s after SIGTERM:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def host_factory(pf_dirs: dict[str, Path]) -> Iterator[Any]:
    """``host_factory(config="", args=[], env={}, console=False)`` starts a real host."""
    started: list[HostProcess] = []

    def make(config: str = "", args: list[str] | None = None, env: dict[str, str] | None = None,
             console: bool = False, start: bool = True) -> HostProcess:
        h = HostProcess(pf_dirs, config, args, env, console)
        started.append(h)
        return h.start() if start else h

    yield make
    for h in started:
        try:
            h.stop()
        except AssertionError:
            pass
        h.ipc.close()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR


# -- property-based tests ---------------------------------------------------------
# The normal suite tries a few hundred cases per parser; the dedicated run
# (`python -m bench.reliability`, HYPOTHESIS_PROFILE=fuzz) tries 10 000 each.
# Tests set `deadline=None` at most; the case count comes from the profile.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("default", max_examples=300, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("fuzz", max_examples=1_000 if os.environ.get("PF_FUZZ_QUICK") else 10_000, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
except ImportError:  # pragma: no cover - hypothesis is a test extra
    pass


@pytest.fixture
def figures(request) -> Any:
    """``figures(name, value, unit="")`` records a number for docs/reliability.md.

    Written to the JSON-lines file named by PF_FIGURES (set by
    ``python -m bench.reliability``); a no-op in the normal suite.
    """
    import json as _json

    def record(name: str, value: Any, unit: str = "") -> None:
        path = os.environ.get("PF_FIGURES")
        if path:
            with open(path, "a") as f:
                f.write(_json.dumps({"test": request.node.nodeid, "name": name, "value": value, "unit": unit}) + "\n")

    return record


@pytest.fixture
def sound_server(monkeypatch) -> Iterator[Any]:
    """A private PulseAudio (user mode, null sink as the default sink) that this test's
    processes reach through PULSE_SERVER; stopped after the test."""
    from bench.soundserver import SoundServer, missing

    reason = missing()
    if reason:
        pytest.skip(f"no sound server: {reason}")
    with SoundServer() as server:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        yield server
