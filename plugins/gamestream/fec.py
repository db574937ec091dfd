"""GF(2^8) Reed-Solomon parity, byte-compatible with nanors (what Moonlight decodes).

nanors builds a systematic Cauchy code over GF(2^8) with the polynomial 0x11D:
the coefficient of data shard ``i`` in parity row ``j`` (``m`` parity rows) is
``inv((m + i) XOR j)``. Only the encoder lives here; Moonlight reconstructs.

Two kernels compute the same bytes:

* :class:`IsalKernel` calls Intel ISA-L's ``ec_init_tables``/``ec_encode_data``
  through ctypes. ISA-L accepts an arbitrary coefficient matrix and uses the
  same field polynomial, so we hand it the nanors matrix and get SIMD speed
  (GB/s). Found as ``libisal.so.2`` (Debian package ``libisal2``).
* :class:`NumpyKernel` is the portable fallback: one 256-entry row of a
  multiplication table per coefficient, gathered with ``np.take`` per data
  shard. Tens of MB/s — fine for tests and low bitrates, too slow for 4K.

:func:`best_kernel` picks ISA-L when it loads, else numpy. Both are checked
against the vectors nanors itself produced (tests/test_gamestream_fec.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import numpy as np

log = logging.getLogger("punktfunk.gamestream.fec")

POLY = 0x11D
MAX_SHARDS = 255


def _tables() -> tuple[np.ndarray, np.ndarray]:
    exp = np.zeros(512, dtype=np.uint16)
    logt = np.zeros(256, dtype=np.int32)
    x = 1
    for i in range(255):
        exp[i] = x
        logt[x] = i
        x <<= 1
        if x & 0x100:
            x ^= POLY
    exp[255:510] = exp[0:255]
    return exp, logt


_EXP, _LOG = _tables()


def gf_mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return int(_EXP[_LOG[a] + _LOG[b]])


def gf_inv(a: int) -> int:
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return int(_EXP[255 - _LOG[a]])


@lru_cache(maxsize=1)
def mul_table() -> np.ndarray:
    """256×256 table: ``MUL[a, b] = a·b`` in GF(2^8)/0x11D."""
    a = np.arange(256)
    la = _LOG[a][:, None]
    lb = _LOG[a][None, :]
    t = _EXP[la + lb].astype(np.uint8)
    t[0, :] = 0
    t[:, 0] = 0
    return t


@lru_cache(maxsize=512)
def cauchy_matrix(k: int, m: int) -> np.ndarray:
    """The (m, k) parity coefficient matrix nanors uses for k data and m parity shards."""
    if not (1 <= k and 1 <= m and k + m <= MAX_SHARDS + 1):
        raise ValueError(f"unsupported FEC shape k={k} m={m} (k + m must be ≤ 256)")
    mat = np.empty((m, k), dtype=np.uint8)
    for j in range(m):
        for i in range(k):
            mat[j, i] = gf_inv((m + i) ^ j)
    mat.setflags(write=False)
    return mat


class FecKernel:
    """Computes parity rows in place: ``shards[k:k+m] = C · shards[:k]``."""

    name = "?"

    def encode(self, shards: np.ndarray, k: int, m: int, matrix: np.ndarray | None = None) -> None:
        """``shards`` is a C-contiguous (≥ k+m, S) uint8 array; rows k..k+m are overwritten.

        ``matrix`` overrides the nanors Cauchy matrix (the audio stream uses a
        fixed RS(4,2) matrix)."""
        raise NotImplementedError


class NumpyKernel(FecKernel):
    name = "numpy"

    def encode(self, shards: np.ndarray, k: int, m: int, matrix: np.ndarray | None = None) -> None:
        mat = cauchy_matrix(k, m) if matrix is None else matrix
        mul = mul_table()
        parity = shards[k:k + m]
        parity[...] = 0
        for i in range(k):
            # (m, 256) rows of the table for this column's coefficients, then one
            # gather of the data bytes through every row at once
            rows = mul[mat[:, i]]
            parity ^= np.take(rows, shards[i], axis=1)


def _load_isal() -> ctypes.CDLL | None:
    names = ["libisal.so.2", "libisal.so"]
    found = ctypes.util.find_library("isal")
    if found:
        names.insert(0, found)
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            lib.ec_init_tables.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
            lib.ec_init_tables.restype = None
            lib.ec_encode_data.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                           ctypes.c_void_p, ctypes.c_void_p]
            lib.ec_encode_data.restype = None
        except AttributeError:
            continue
        return lib
    return None


class IsalKernel(FecKernel):
    """ISA-L SIMD kernel (``libisal.so.2``). Raises OSError when the library is missing."""

    name = "isal"

    def __init__(self, threads: int = 1) -> None:
        lib = _load_isal()
        if lib is None:
            raise OSError("libisal.so.2 not found (Debian/Ubuntu: apt-get install libisal2)")
        self._lib = lib
        self._lock = threading.Lock()
        # expanded tables per (k, m): 32·k·m bytes each, kept for the common shapes
        self._tables: OrderedDict[tuple[int, int, bytes | None], tuple[np.ndarray, int]] = OrderedDict()
        self._local = threading.local()
        #: >1 splits a block's columns over this many threads (ctypes releases the GIL)
        self.threads = max(1, int(threads))
        self._pool: Any = None

    def _gftbls(self, k: int, m: int, matrix: np.ndarray | None) -> tuple[np.ndarray, int]:
        """The expanded tables for this code and their address."""
        key = (k, m, None if matrix is None else matrix.tobytes())
        with self._lock:
            t = self._tables.get(key)
            if t is not None:
                self._tables.move_to_end(key)
                return t
        mat = np.ascontiguousarray(cauchy_matrix(k, m) if matrix is None else matrix, dtype=np.uint8)
        tbl = np.empty(32 * k * m, dtype=np.uint8)
        self._lib.ec_init_tables(k, m, mat.ctypes.data, tbl.ctypes.data)
        t = (tbl, tbl.ctypes.data)
        with self._lock:
            self._tables[key] = t
            while len(self._tables) > 96:
                self._tables.popitem(last=False)
        return t

    def _plan(self, k: int, m: int, stride: int, parts: int) -> tuple[np.ndarray, list[np.ndarray], int]:
        """Row offsets and pointer-array scratch for one block shape, kept per
        calling thread: the per-call glue is then two numpy adds, not a
        rebuild of k + m pointers (tens of µs at k = 212, as much as the small
        block's whole encode)."""
        plans = getattr(self._local, "plans", None)
        if plans is None:
            plans = self._local.plans = {}
        key = (k, m, stride, parts)
        plan = plans.get(key)
        if plan is None:
            if len(plans) > 32:
                plans.clear()
            offsets = np.arange(k + m, dtype=np.uint64) * np.uint64(stride)
            scratch = np.empty((parts, k + m), dtype=np.uint64)
            plan = plans[key] = (offsets, list(scratch), scratch.ctypes.data)
        return plan

    def encode(self, shards: np.ndarray, k: int, m: int, matrix: np.ndarray | None = None) -> None:
        if not shards.flags.c_contiguous or shards.dtype != np.uint8:
            raise ValueError("shards must be a C-contiguous uint8 array")
        if shards.shape[0] < k + m:
            raise ValueError(f"shards has {shards.shape[0]} rows, needs k + m = {k + m}")
        if not shards.flags.writeable:
            raise ValueError("shards must be writable (the parity rows are written in place)")
        size = shards.shape[1]
        if not size:
            return
        _, tp = self._gftbls(k, m, matrix)
        parts = self.threads if size >= 256 * self.threads else 1
        offsets, rows, addr = self._plan(k, m, shards.strides[0], parts)
        base = ctypes.addressof(ctypes.c_char.from_buffer(shards))
        fn = self._lib.ec_encode_data
        row_bytes = 8 * (k + m)
        if parts == 1:
            np.add(offsets, base, out=rows[0])
            fn(size, k, m, tp, addr, addr + 8 * k)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="fec")
        step = ((size + parts - 1) // parts + 63) // 64 * 64  # 64-byte aligned column ranges
        calls = []
        for i in range(parts):
            lo, hi = i * step, min(size, (i + 1) * step)
            if lo >= size:
                break
            np.add(offsets, base + lo, out=rows[i])
            ptrs = addr + i * row_bytes
            calls.append((hi - lo, k, m, tp, ptrs, ptrs + 8 * k))
        futures = [self._pool.submit(fn, *c) for c in calls[1:]]
        fn(*calls[0])
        for f in futures:
            f.result()

    def close(self) -> None:
        """Stop the helper threads of a multi-threaded kernel."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


_best: FecKernel | None = None


def best_kernel() -> FecKernel:
    """ISA-L when available, else the numpy fallback (logged once)."""
    global _best
    if _best is None:
        try:
            _best = IsalKernel()
        except OSError as exc:
            log.warning("FEC uses the slow numpy kernel: %s", exc)
            _best = NumpyKernel()
    return _best


def encode_parity(data: list[bytes], m: int, kernel: FecKernel | None = None) -> list[bytes]:
    """Convenience form: equal-length data shards in, ``m`` parity shards out."""
    k = len(data)
    size = len(data[0])
    buf = np.zeros((k + m, size), dtype=np.uint8)
    for i, d in enumerate(data):
        if len(d) != size:
            raise ValueError("all data shards must have the same length")
        buf[i] = np.frombuffer(d, dtype=np.uint8)
    (kernel or best_kernel()).encode(buf, k, m)
    return [buf[k + j].tobytes() for j in range(m)]
