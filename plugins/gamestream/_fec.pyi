"""Types of the compiled batch encoder (_fec.c, built by setup.py): mypy reads no extension module."""

from collections.abc import Sequence

import numpy as np

def encode(fn: int, shards: np.ndarray, blocks: Sequence[tuple[int, int, int, np.ndarray]], lo: int = 0,
           hi: int = -1, /) -> None: ...
