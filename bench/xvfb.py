"""Start a private Xvfb (tests and benchmarks share this)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def start_xvfb(width: int, height: int, *extra: str, timeout: float = 10.0) -> tuple[subprocess.Popen[bytes], str]:
    """An Xvfb of ``width``×``height`` at 24 bits and its display name (``":N"``).

    The number is tried from a per-process start, so one process does not meet an earlier
    display of the same name again (capture libraries keep connections by name), and a
    display counts as ours only when its lock file names our Xvfb: another run that started
    a server on the same number at the same moment makes ours exit, and the next is tried.
    Raises RuntimeError when none starts within ``timeout``."""
    deadline = time.monotonic() + timeout
    num = 100 + (os.getpid() * 7 + int(time.monotonic() * 1000)) % 1500
    while time.monotonic() < deadline:
        num += 1
        if Path(f"/tmp/.X{num}-lock").exists() or Path(f"/tmp/.X11-unix/X{num}").exists():
            continue
        proc = subprocess.Popen(["Xvfb", f":{num}", "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp",
                                 *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and time.monotonic() < deadline:
            if Path(f"/tmp/.X11-unix/X{num}").exists() and _lock_pid(num) == proc.pid:
                return proc, f":{num}"
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise RuntimeError("Xvfb did not start")


def _lock_pid(num: int) -> int:
    try:
        return int(Path(f"/tmp/.X{num}-lock").read_text().strip() or 0)
    except (OSError, ValueError):
        return 0
