"""Apps in tests of both protocols: a marker app that shows its prep ran, its process group,
and whether it is still running; and waiting for such things."""

from __future__ import annotations

import os
import time
from pathlib import Path


def marker_app(d: Path, name: str = "Marker") -> dict:
    """An app whose command checks its prep step ran, leaves a child in its group, writes its
    process group id and a marker, and sleeps; prep/undo leave files behind."""
    script = f'test -e {d}/prepared || exit 3; sleep 60 & echo $$ > {d}/pgid; touch {d}/marker; wait'
    return {"name": name, "cmd": ["sh", "-c", script], "exit_timeout": 3,
            "prep": [{"do": ["touch", f"{d}/prepared"], "undo": ["touch", f"{d}/undone"]}]}


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
