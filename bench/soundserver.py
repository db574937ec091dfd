"""A private PulseAudio sound server for tests and benchmarks, and a tone to play into it.

The server runs in user mode from Debian's ``pulseaudio`` package with no system
configuration at all (``-n``: none of default.pa's modules, so no D-Bus, no
hardware, no session): only the native protocol on a socket in its own
directory, and a null sink (48 kHz) as the default sink, whose monitor is what
the ``desktop`` audio source records. Clients reach it through
``PULSE_SERVER=unix:<socket>`` (see :attr:`SoundServer.env`). As root,
PulseAudio only warns ("not intended to be run as root") in user mode, so CI
needs no ``--system`` mode and no extra user.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SAMPLE_RATE = 48_000
#: the channel order of punktfunk's PCM (media/audio.py CHANNEL_ORDER), as PulseAudio names it
CHANNEL_MAP = {2: "front-left,front-right",
               6: "front-left,front-right,front-center,lfe,rear-left,rear-right",
               8: "front-left,front-right,front-center,lfe,rear-left,rear-right,side-left,side-right"}


def missing() -> str:
    """"" when a private sound server can run here, else what is missing."""
    for tool, package in (("pulseaudio", "pulseaudio"), ("pactl", "pulseaudio-utils"), ("pacat", "pulseaudio-utils")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian/Ubuntu: apt-get install {package})"
    return ""


class SoundServer:
    """``with SoundServer() as s:`` a PulseAudio of our own, stopped (and its files removed) on exit."""

    def __init__(self, channels: int = 2, sink: str = "punktfunk_null") -> None:
        self.channels = channels
        self.sink = sink
        self.dir = Path()
        self.proc: subprocess.Popen | None = None
        self._players: list[subprocess.Popen] = []

    @property
    def socket(self) -> Path:
        return self.dir / "native"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs in its environment to use this server (and no other)."""
        return {"PULSE_SERVER": f"unix:{self.socket}", "PULSE_RUNTIME_PATH": str(self.dir / "client"),
                "PULSE_COOKIE": str(self.dir / "cookie")}

    def client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def __enter__(self) -> SoundServer:
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        self.dir = Path(tempfile.mkdtemp(prefix="pf-pulse-"))  # short: unix socket paths are limited
        script = self.dir / "server.pa"
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-null-sink sink_name={self.sink} rate={SAMPLE_RATE} channels={self.channels} "
            f"channel_map={CHANNEL_MAP[self.channels]}\n"
            f"set-default-sink {self.sink}\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir),
               "XDG_RUNTIME_DIR": str(self.dir), "XDG_CONFIG_HOME": str(self.dir / "config"),
               "PULSE_RUNTIME_PATH": str(self.dir / "runtime"), "PULSE_STATE_PATH": str(self.dir / "state")}
        self.proc = subprocess.Popen(
            ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
             "--system=no", "--disallow-exit", "--log-target=stderr", "--log-level=error"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-500:] if self.proc.stderr else ""
                self.__exit__()
                raise RuntimeError(f"pulseaudio exited at start: {err}")
            if self.socket.exists() and self.answers():
                return self
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("pulseaudio did not answer within 15 s")

    def answers(self, timeout: float = 2.0) -> bool:
        try:
            return subprocess.run(["pactl", "info"], env=self.client_env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=timeout).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.client_env(), capture_output=True, text=True, timeout=5,
                              check=True).stdout

    def play(self, pcm: np.ndarray) -> subprocess.Popen:
        """Play int16 PCM shaped (n, channels) into the default sink with pacat; returns the player."""
        pcm = np.ascontiguousarray(pcm, dtype=np.int16)
        raw = self.dir / f"play-{len(self._players)}.raw"
        raw.write_bytes(pcm.tobytes())
        proc = subprocess.Popen(["pacat", "--playback", "--raw", "--format=s16le", f"--rate={SAMPLE_RATE}",
                                 f"--channels={pcm.shape[1]}", f"--channel-map={CHANNEL_MAP[pcm.shape[1]]}",
                                 "--latency-msec=20", str(raw)],
                                env=self.client_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._players.append(proc)
        return proc

    def play_tone(self, hz: float, seconds: float, amplitude: float = 0.5, channels: int = 2) -> subprocess.Popen:
        return self.play(tone(hz, seconds, amplitude, channels))

    def pause(self) -> None:
        """Stop the server dead (SIGSTOP): a sound server that hangs."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop_players(self) -> None:
        for p in self._players:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        self._players.clear()

    def __exit__(self, *exc: object) -> None:
        self.stop_players()
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None
        if self.dir != Path():
            shutil.rmtree(self.dir, ignore_errors=True)


def tone(hz: float, seconds: float, amplitude: float = 0.5, channels: int = 2,
         per_channel: Sequence[float] | None = None) -> np.ndarray:
    """A sine of ``hz`` (or one frequency a channel) as int16 shaped (n, channels)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    freqs = list(per_channel) if per_channel is not None else [hz] * channels
    return np.stack([np.sin(2 * np.pi * f * t) * amplitude * 32767 for f in freqs], axis=1).astype(np.int16)
