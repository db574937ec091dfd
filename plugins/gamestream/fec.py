"""GF(2^8) Reed-Solomon parity, byte-compatible with nanors (what Moonlight decodes).

nanors builds a systematic Cauchy code over GF(2^8) with the polynomial 0x11D:
the coefficient of data shard ``i`` in parity row ``j`` (``m`` parity rows) is
``inv((m + i) XOR j)``. Only the encoder lives here; Moonlight reconstructs.

Two kernels compute the same bytes:

* :class:`IsalKernel` calls Intel ISA-L's ``ec_encode_data``. ISA-L accepts
  an arbitrary coefficient matrix and uses the same field polynomial, so we
  hand it the nanors matrix and get SIMD speed (GB/s). Every ISA-L on the
  machine is considered and the newest is used (:func:`isal_libraries`): the
  2.32 that the pinned ``pyeclib`` wheel ships (found through the wheel's own
  files list), or a system ``libisal.so.2`` (Debian's ``libisal2`` is 2.30,
  which has no GFNI kernels and slower AVX2 ones). The SIMD variant is chosen
  by the same CPU feature rules as ISA-L's own dispatcher, but by name, so it
  can be reported and every variant the CPU runs can be tested. When the
  compiled helper ``punktfunk_gamestream._fec`` is built, one call encodes
  every block of a frame with the GIL released; otherwise each block is one
  ctypes call (same bytes).
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
import os
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy as np

_cfec: ModuleType | None
try:  # the optional compiled batch encoder (setup.py); ctypes per block without it
    from punktfunk_gamestream import _fec as _cfec
except ImportError:  # pragma: no cover - depends on the build
    _cfec = None

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


#: SIMD loads that straddle a cache line cost extra: shard rows start on this boundary
ALIGN = 64


def shard_buffer(rows: int, width: int) -> np.ndarray:
    """A zeroed (rows, width) uint8 array whose first byte is 64-byte aligned
    (numpy only promises 16). With a width that is a multiple of 64, such as
    the 1408-byte GameStream shard, every row is aligned; ISA-L's AVX2 kernel
    is then 15–25 % faster than on a 16-byte-aligned buffer on the dev VM."""
    raw = np.zeros(rows * width + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + rows * width].reshape(rows, width)


class FecKernel:
    """Computes parity rows in place: ``shards[k:k+m] = C · shards[:k]``."""

    name = "?"

    def encode(self, shards: np.ndarray, k: int, m: int, matrix: np.ndarray | None = None) -> None:
        """``shards`` is a C-contiguous (≥ k+m, S) uint8 array; rows k..k+m are overwritten.

        ``matrix`` overrides the nanors Cauchy matrix (the audio stream uses a
        fixed RS(4,2) matrix)."""
        raise NotImplementedError

    def encode_blocks(self, shards: np.ndarray, blocks: Sequence[tuple[int, int, int]],
                      matrix: np.ndarray | None = None) -> None:
        """Every block of a frame: ``blocks`` lists (first row, k, m), each block's
        k data rows followed by its m parity rows."""
        for row0, k, m in blocks:
            self.encode(shards[row0:row0 + k + m], k, m, matrix)

    def describe(self) -> dict[str, Any]:
        return {"kernel": self.name}


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


#: the ISA-L wheel fec.py loads (pinned in pyproject.toml), found through its files list
ISAL_WHEEL = "pyeclib"

#: ``ec_encode_data_<variant>`` in the order ISA-L's own dispatcher prefers them, with
#: the /proc/cpuinfo flags its CPUID tests stand for (include/multibinary.asm,
#: mbin_dispatch_init8: AVX-512 "G1" and "G2" feature groups, AVX2 "G2")
_AVX512_G1 = frozenset({"avx512f", "avx512vl", "avx512bw", "avx512cd", "avx512dq"})
_AVX512_G2 = frozenset({"avx512_vbmi2", "gfni", "vaes", "vpclmulqdq", "avx512_vnni", "avx512_bitalg",
                        "avx512_vpopcntdq"})
_AVX2_G2 = frozenset({"gfni", "vaes", "vpclmulqdq"})
ISAL_VARIANTS: tuple[tuple[str, frozenset[str]], ...] = (
    ("avx512_gfni", _AVX512_G1 | _AVX512_G2),
    ("avx512", _AVX512_G1),
    ("avx2_gfni", frozenset({"avx2"}) | _AVX2_G2),
    ("avx2", frozenset({"avx2"})),
    ("avx", frozenset({"avx"})),
    ("sse", frozenset({"sse4_2"})),
    ("base", frozenset()),
)
#: k·m·shard bytes below which ``threads > 1`` does not split a frame (about 100 µs of work
#: at AVX2 speed, e.g. k=76 m=16 stays on one thread, k=212 m=43 is split)
SPLIT_MIN_WORK = 4_000_000
#: the variant name when the library's own dispatcher chooses (CPU flags unknown)
DISPATCH = "dispatch"


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """This CPU's feature flags as Linux lists them, or None off x86 Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


class IsalLibrary:
    """One ISA-L shared library that loaded, its version and the encoder variants this CPU runs."""

    def __init__(self, lib: ctypes.CDLL, path: str, source: str) -> None:
        self.lib = lib
        self.path = path
        #: where it came from: "pyeclib 1.8.0 wheel" or "system"
        self.source = source
        #: (major, minor, patch); versions before 2.32 have no version call, so
        #: 2.31 is known by its GFNI kernels and anything older counts as 2.30
        self.version: tuple[int, int, int]
        if hasattr(lib, "isal_get_version"):
            lib.isal_get_version.restype = ctypes.c_uint
            v = int(lib.isal_get_version())
            self.version = (v >> 16, (v >> 8) & 0xFF, v & 0xFF)
            self.version_text = ".".join(str(part) for part in self.version)
        elif hasattr(lib, "ec_init_tables_gfni"):
            self.version, self.version_text = (2, 31, 0), "2.31"
        else:
            self.version, self.version_text = (2, 30, 0), "2.30 or older"
        flags = cpu_flags()
        if flags is None or not hasattr(lib, "ec_encode_data_base"):
            self.variants: tuple[str, ...] = (DISPATCH,)
        else:
            self.variants = tuple(name for name, needs in ISAL_VARIANTS
                                  if needs <= flags and hasattr(lib, f"ec_encode_data_{name}"))

    @property
    def label(self) -> str:
        return f"ISA-L {self.version_text} ({self.source})"

    def functions(self, variant: str) -> tuple[Any, Any]:
        """(ec_init_tables, ec_encode_data) for ``variant``: GFNI kernels take their own table layout."""
        lib = self.lib
        if variant == DISPATCH:
            init, encode = lib.ec_init_tables, lib.ec_encode_data
        else:
            gfni = variant.endswith("_gfni")
            init = lib.ec_init_tables_gfni if gfni else getattr(lib, "ec_init_tables_base", lib.ec_init_tables)
            encode = getattr(lib, f"ec_encode_data_{variant}")
        init.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        init.restype = None
        encode.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_void_p]
        encode.restype = None
        return init, encode


def _wheel_isal_paths() -> list[str]:
    """The libisal the pinned wheel ships, found through its installed files list.

    A wheel that is installed but no longer ships the library where its files
    list says is logged (one line) and skipped."""
    from importlib import metadata

    try:
        dist = metadata.distribution(ISAL_WHEEL)
    except metadata.PackageNotFoundError:
        return []
    files = [f for f in dist.files or () if f.name.startswith("libisal") and ".so" in f.name]
    paths = [str(f.locate()) for f in files]
    found = [p for p in paths if os.path.isfile(p)]
    if not found:
        what = f"lists {', '.join(paths)} but the file is missing" if paths else "lists no libisal*.so"
        log.warning("%s %s is installed but %s (a new wheel layout?); FEC uses another ISA-L or numpy",
                    ISAL_WHEEL, dist.version, what)
    return found


def _open_isal(name: str, source: str) -> IsalLibrary | None:
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        if source != "system":
            log.warning("%s ISA-L at %s does not load (%s); FEC uses another ISA-L or numpy", source, name, exc)
        return None
    if not all(hasattr(lib, f) for f in ("ec_init_tables", "ec_encode_data")):
        log.warning("%s at %s has no ec_init_tables/ec_encode_data; FEC uses another ISA-L or numpy", source, name)
        return None
    return IsalLibrary(lib, name, source)


@lru_cache(maxsize=1)
def isal_libraries() -> tuple[IsalLibrary, ...]:
    """Every ISA-L that loads here, newest first (the wheel's first on a tie)."""
    from importlib import metadata

    found: list[IsalLibrary] = []
    wheel_paths = _wheel_isal_paths()
    if wheel_paths:
        source = f"{ISAL_WHEEL} {metadata.version(ISAL_WHEEL)} wheel"
        found += [lib for p in wheel_paths if (lib := _open_isal(p, source)) is not None]
    system = ctypes.util.find_library("isal")
    for name in dict.fromkeys(n for n in (system, "libisal.so.2") if n):
        lib = _open_isal(name, "system")
        if lib is not None:
            found.append(lib)
            break
    found.sort(key=lambda lib: lib.version, reverse=True)  # stable: the wheel stays first on a tie
    return tuple(found)


class IsalKernel(FecKernel):
    """ISA-L SIMD kernel. Raises OSError when no ISA-L loads.

    ``library`` and ``variant`` default to the newest ISA-L and the best
    variant this CPU runs; ``batch=False`` forces the ctypes call per block
    even when the compiled helper is built (for tests and the benchmark)."""

    name = "isal"

    def __init__(self, threads: int = 1, *, library: IsalLibrary | None = None, variant: str | None = None,
                 batch: bool = True) -> None:
        if library is None:
            libs = isal_libraries()
            if not libs:
                raise OSError(f"no ISA-L found: pip install {ISAL_WHEEL} (a dependency of punktfunk on x86-64 "
                              "and aarch64 Linux) or apt-get install libisal2")
            library = libs[0]
        variant = variant or library.variants[0]
        if variant not in library.variants:
            raise OSError(f"{library.label} has no {variant} kernel this CPU runs (it runs {library.variants})")
        self.library = library
        self.variant = variant
        self._init_tables, self._encode_fn = library.functions(variant)
        self._encode_addr = ctypes.cast(self._encode_fn, ctypes.c_void_p).value or 0
        self._batch = _cfec.encode if batch and _cfec is not None else None
        self._lock = threading.Lock()
        # expanded tables per (k, m): 32·k·m bytes each, kept for the common shapes
        self._tables: dict[tuple[int, ...] | tuple[int, int, bytes], tuple[np.ndarray, int]] = {}
        self._local = threading.local()
        #: >1 splits a block's columns over this many threads (the encoder releases the GIL)
        self.threads = max(1, int(threads))
        self._pool: Any = None

    @property
    def label(self) -> str:
        return f"{self.library.label}, {self.variant} kernel"

    def describe(self) -> dict[str, Any]:
        """What status and ``punktfunk plugins`` show: library, version, kernel, call path."""
        return {"kernel": "isal", "library": self.library.path, "source": self.library.source,
                "version": self.library.version_text, "variant": self.variant,
                "calls": "one compiled call per frame" if self._batch else "one ctypes call per block",
                "threads": self.threads}

    def _gftbls(self, k: int, m: int, matrix: np.ndarray | None) -> tuple[np.ndarray, int]:
        """The expanded tables for this code and their address.

        Read without the lock (a dict lookup is atomic): this is on the
        per-frame path, the lock only serialises building a new entry."""
        key = (k, m) if matrix is None else (k, m, matrix.tobytes())
        t = self._tables.get(key)
        if t is not None:
            return t
        mat = np.ascontiguousarray(cauchy_matrix(k, m) if matrix is None else matrix, dtype=np.uint8)
        tbl = np.zeros(32 * k * m, dtype=np.uint8)
        self._init_tables(k, m, mat.ctypes.data, tbl.ctypes.data)
        tbl.setflags(write=False)
        t = (tbl, tbl.ctypes.data)
        with self._lock:
            while len(self._tables) >= 96:  # oldest first: frames reuse a handful of shapes
                self._tables.pop(next(iter(self._tables)))
            self._tables[key] = t
        return t

    def _plan(self, k: int, m: int, stride: int, parts: int) -> tuple[np.ndarray, list[np.ndarray], int]:
        """Row offsets and pointer-array scratch for one block shape, kept per
        calling thread (the ctypes path): the per-call glue is then two numpy
        adds, not a rebuild of k + m pointers."""
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
        if self._batch is not None and self.threads == 1:
            # the compiled helper checks the buffer and the block itself (ValueError)
            self._batch(self._encode_addr, shards, ((0, k, m, self._gftbls(k, m, matrix)[0]),))
            return
        self.encode_blocks(shards, ((0, k, m),), matrix)

    def encode_blocks(self, shards: np.ndarray, blocks: Sequence[tuple[int, int, int]],
                      matrix: np.ndarray | None = None) -> None:
        batch = self._batch
        if batch is not None and self.threads == 1:
            batch(self._encode_addr, shards, [(r, k, m, self._gftbls(k, m, matrix)[0]) for r, k, m in blocks])
            return
        if not shards.flags.c_contiguous or shards.dtype != np.uint8 or shards.ndim != 2:
            raise ValueError("shards must be a C-contiguous 2-D uint8 array")
        if not shards.flags.writeable:
            raise ValueError("shards must be writable (the parity rows are written in place)")
        for row0, k, m in blocks:
            if row0 < 0 or shards.shape[0] < row0 + k + m:
                raise ValueError(f"shards has {shards.shape[0]} rows, block at row {row0} needs k + m = {k + m}")
        size = shards.shape[1]
        if not size or not blocks:
            return
        # a second thread pays a hand-over of tens of µs: only blocks that take longer are split
        split = size >= 256 * self.threads and sum(k * m for _, k, m in blocks) * size >= SPLIT_MIN_WORK
        parts = self.threads if split else 1
        if batch is not None:
            work = [(row0, k, m, self._gftbls(k, m, matrix)[0]) for row0, k, m in blocks]
            if parts == 1:
                batch(self._encode_addr, shards, work)
            else:
                self._split(parts, size, lambda lo, hi: batch(self._encode_addr, shards, work, lo, hi))
            return
        for row0, k, m in blocks:
            self._encode_ctypes(shards, row0, k, m, matrix, size, parts)

    def _encode_ctypes(self, shards: np.ndarray, row0: int, k: int, m: int, matrix: np.ndarray | None,
                       size: int, parts: int) -> None:
        _, tp = self._gftbls(k, m, matrix)
        offsets, rows, addr = self._plan(k, m, shards.strides[0], parts)
        base = ctypes.addressof(ctypes.c_char.from_buffer(shards.data)) + row0 * shards.strides[0]
        fn = self._encode_fn
        if parts == 1:
            np.add(offsets, base, out=rows[0])
            fn(size, k, m, tp, addr, addr + 8 * k)
            return
        row_bytes = 8 * (k + m)
        step = self._step(parts, size)

        def part(lo: int, hi: int) -> None:
            i = lo // step  # each range has its own pointer scratch row
            np.add(offsets, base + lo, out=rows[i])
            ptrs = addr + i * row_bytes
            fn(hi - lo, k, m, tp, ptrs, ptrs + 8 * k)

        self._split(parts, size, part)

    @staticmethod
    def _step(parts: int, size: int) -> int:
        return ((size + parts - 1) // parts + 63) // 64 * 64  # 64-byte aligned column ranges

    def _split(self, parts: int, size: int, work: Callable[[int, int], None]) -> None:
        """Run ``work(lo, hi)`` over ``parts`` column ranges, the first on this thread."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="fec")
        step = self._step(parts, size)
        ranges = [(lo, min(size, lo + step)) for lo in range(0, size, step)]
        futures = [self._pool.submit(work, lo, hi) for lo, hi in ranges[1:]]
        work(*ranges[0])
        for f in futures:
            f.result()

    def close(self) -> None:
        """Stop the helper threads of a multi-threaded kernel."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def isal_kernels() -> list[IsalKernel]:
    """One kernel per ISA-L library and encoder variant that runs on this CPU (for tests)."""
    return [IsalKernel(library=lib, variant=v) for lib in isal_libraries() for v in lib.variants]


_best: FecKernel | None = None


def best_kernel() -> FecKernel:
    """ISA-L when available, else the numpy fallback (what was chosen is logged once)."""
    global _best
    if _best is None:
        try:
            isal = IsalKernel()
        except OSError as exc:
            log.warning("FEC uses the slow numpy kernel: %s", exc)
            _best = NumpyKernel()
        else:
            log.info("GameStream FEC: %s (%s), %s", isal.label, isal.describe()["calls"], isal.library.path)
            _best = isal
    return _best


def describe() -> str:
    """One line for ``punktfunk plugins`` and status: which FEC kernel this host uses."""
    kernel = best_kernel()
    if not isinstance(kernel, IsalKernel):
        return "numpy (slow; no ISA-L found)"
    return f"{kernel.label}, {kernel.describe()['calls']}"


def encode_parity(data: list[bytes], m: int, kernel: FecKernel | None = None) -> list[bytes]:
    """Convenience form: equal-length data shards in, ``m`` parity shards out."""
    k = len(data)
    size = len(data[0])
    buf = shard_buffer(k + m, size)
    for i, d in enumerate(data):
        if len(d) != size:
            raise ValueError("all data shards must have the same length")
        buf[i] = np.frombuffer(d, dtype=np.uint8)
    (kernel or best_kernel()).encode(buf, k, m)
    return [buf[k + j].tobytes() for j in range(m)]
