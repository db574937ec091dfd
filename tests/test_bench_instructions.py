"""bench/instructions.py: callgrind instruction counts that the full benchmark run relies on.

The counts stand in for CPU seconds where the VM's drift is larger than the
effect measured, so the helper must give the same number for the same work,
scale with the work, and subtract start-up.
"""

from __future__ import annotations

import shutil
import sys

import pytest

from bench import instructions

pytestmark = pytest.mark.skipif(shutil.which("valgrind") is None,
                                reason="valgrind is missing (.ci/install-deps.sh installs it)")


def _loop(per_frame: int):
    # a stand-in "pipeline": `frames` frames of `per_frame` loop iterations each, after a fixed start-up
    def cmd(frames: int) -> list[str]:
        return [sys.executable, "-S", "-c",
                f"import json\nx = 0\nfor i in range({frames} * {per_frame}):\n    x += i\n"]
    return cmd


def test_counts_repeat_and_per_frame_scales_with_the_work():
    a = instructions.count(_loop(1000)(5))
    b = instructions.count(_loop(1000)(5))
    assert a > 10_000_000  # an interpreter start-up is tens of millions of instructions
    assert abs(a - b) / a < 0.002, (a, b)  # the same work counts the same, whatever the load
    one = instructions.per_frame(_loop(2000), 12, 4)
    two = instructions.per_frame(_loop(4000), 12, 4)
    assert one > 0
    # start-up is subtracted: twice the work per frame is twice the count per frame
    assert 1.9 < two / one < 2.1, (one, two)


def test_a_failing_command_raises_with_its_output():
    with pytest.raises(RuntimeError, match="callgrind run failed"):
        instructions.count([sys.executable, "-S", "-c", "raise SystemExit(3)"])
