"""Instructions per frame with valgrind's callgrind: a cost figure that does not drift.

CPU seconds on a shared VM move by ±10–20 % from one run to the next, more
than several of the effects the benchmarks are asked to resolve (an armed
capture should cost ≤ 1 %). callgrind counts the instructions a process
executes (all threads), which is the same for the same binary and input
whatever else the machine is doing. It is a proxy, not a replacement: an
instruction of interpreted Python and one of x264's SIMD do not take the same
time, so reports show both figures.

Start-up (interpreter, imports, encoder set-up) is taken out the same way for
every command: each is run for a long and a short frame count and the
difference is divided by the difference in frames. The two runs go in
parallel; counts do not depend on contention.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

INSTALL = "apt-get install valgrind"
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def available() -> bool:
    return shutil.which("valgrind") is not None


def count(cmd: list[str], timeout: float = 900) -> int:
    """Instructions ``cmd`` executes under callgrind (all threads, start to exit)."""
    with tempfile.TemporaryDirectory(prefix="pf-cg-") as tmp:
        env = dict(os.environ, PYTHONHASHSEED="0", PYTHONMALLOC="malloc")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", "--dump-line=no",
             "--compress-strings=no", *cmd],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout, env=env)
    err = proc.stderr.decode(errors="replace")
    found = _COLLECTED.findall(err)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"callgrind run failed ({proc.returncode}): {' '.join(cmd)}\n{err[-600:]}")
    return int(found[-1])


def per_frame(cmd_for: Callable[[int], list[str]], frames: int, warm: int) -> float:
    """Steady-state instructions per frame: (I(frames) − I(warm)) / (frames − warm)."""
    with ThreadPoolExecutor(2) as pool:
        long_run = pool.submit(count, cmd_for(frames))
        short_run = pool.submit(count, cmd_for(warm))
        return (long_run.result() - short_run.result()) / (frames - warm)


def python_cmd(module: str, *args: object) -> list[str]:
    """This interpreter running ``python -m module args`` (a bench child entry point)."""
    return [sys.executable, "-m", module, *map(str, args)]
