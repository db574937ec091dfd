"""GameStream: FEC encode throughput and packetize + send rate per core.

``run(quick)`` measures, in this process:

* nanors-compatible GF(2^8) parity for the block shapes frames produce, with
  1408-byte shards: k=30 m=6 (a ~42 kB frame, one block: most frames), k=76
  m=16 and k=212 m=43 (the largest block), in MB/s of data, single thread:
  ours (the newest ISA-L found, the best variant this CPU runs, one compiled
  call per block as the packetizer makes one per frame), the same through
  ctypes, every other ISA-L found here (Debian's libisal2), ours on two
  threads, the numpy fallback, and two builds of nanors itself, measured in
  the same run: the copy inside moonlight-python's ``libmoonlight-common-c``
  (what Moonlight clients link: generic x86-64, its own CPU dispatch) and
  nanors compiled from source for this CPU (``-O3 -march=native``,
  bench/nanors_native.py). Both nanors are called through ctypes, after
  checking that their parity equals ours. The kernels take turns in rounds
  and each keeps its best round, so drift on a shared machine hits all alike;
* Leopard GF(2^16) (the punktfunk/1 FEC, ``reed-solomon-leopard``) at the
  same block shapes, for comparison (a different code: not what Moonlight
  decodes);
* the ``gamestream`` packetizer + sender on synthetic access units to a
  loopback UDP socket, unpaced: wire Mbit/s per CPU-second, plain and with
  AES-GCM video encryption.

Importing this module does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from bench.cli import cpuinfo

NANORS_INSTALL = "pip install moonlight-python (in the test extra: pip install -e '.[test]')"
#: the goal for the largest block where the CPU has GFNI (one instruction per GF multiply)
GFNI_TARGET_MBPS = 1500.0
#: CPU flags that decide which FEC kernels can run (recorded with the figures)
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vbmi2", "gfni", "vaes",
              "vpclmulqdq")


class NanorsKernel:
    """Compiled nanors through ctypes.

    Without ``path``: the copy Moonlight ships, ``libmoonlight-common-c.so``
    from the moonlight-python wheel; ``reed_solomon_init`` picks the SIMD
    variant for this CPU (the ``*_fn`` pointers), as in a client. With
    ``path``: a plain nanors build (bench/nanors_native.py) whose
    ``reed_solomon_*`` functions are called directly.
    Raises OSError when the library or its symbols are missing."""

    def __init__(self, path: Path | None = None) -> None:
        import ctypes
        import importlib.util

        if path is None:
            spec = importlib.util.find_spec("moonlight_python")
            if spec is None or not spec.submodule_search_locations:
                raise OSError(f"moonlight-python is not installed: {NANORS_INSTALL}")
            libs = [p for d in spec.submodule_search_locations for p in Path(d).glob("libmoonlight-common-c*.so*")]
            if not libs:
                raise OSError("moonlight-python has no libmoonlight-common-c shared library")
            path = libs[0]
            dispatch = True
        else:
            dispatch = False
        lib = ctypes.CDLL(str(path))
        try:
            lib.reed_solomon_init.restype = None
            lib.reed_solomon_init()
            if dispatch:
                fn = {n: ctypes.c_void_p.in_dll(lib, f"reed_solomon_{n}_fn").value
                      for n in ("new", "encode", "release")}
            else:
                fn = {n: ctypes.cast(getattr(lib, f"reed_solomon_{n}"), ctypes.c_void_p).value
                      for n in ("new", "encode", "release")}
        except (AttributeError, ValueError) as exc:
            raise OSError(f"{path.name} has no usable nanors entry points: {exc}") from None
        addr = {n: a for n, a in fn.items() if a}
        if len(addr) != len(fn):
            raise OSError("nanors did not initialise its dispatch table")
        if dispatch:
            self.variant = next((v for v in ("avx512", "avx2", "ssse3", "def")
                                 if ctypes.cast(getattr(lib, f"reed_solomon_encode_{v}", None) or 0,
                                                ctypes.c_void_p).value == addr["encode"]), "unknown")
        else:
            self.variant = "-march=native"
        self._new = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int, ctypes.c_int)(addr["new"])
        self._encode = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                        ctypes.c_int)(addr["encode"])
        self._release = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(addr["release"])
        self._rs: dict[tuple[int, int], int] = {}
        self._ptrs: dict[tuple[int, int, int], Any] = {}

    def encode(self, shards: Any, k: int, m: int) -> None:
        import ctypes

        rs = self._rs.get((k, m))
        if rs is None:
            rs = self._rs[(k, m)] = self._new(k, m)
            if not rs:
                raise MemoryError("reed_solomon_new failed")
        key = (shards.ctypes.data, k + m, shards.shape[1])
        ptrs = self._ptrs.get(key)
        if ptrs is None:
            ptrs = self._ptrs[key] = (ctypes.c_void_p * (k + m))(
                *(shards.ctypes.data + i * shards.strides[0] for i in range(k + m)))
        if self._encode(rs, ptrs, k + m, shards.shape[1]) != 0:
            raise RuntimeError("reed_solomon_encode failed")

    def close(self) -> None:
        for rs in self._rs.values():
            self._release(rs)
        self._rs.clear()


def _same_parity(a: Any, b: Any, k: int, m: int) -> bool:
    """Do kernels ``a`` and ``b`` write the same parity for one random block?"""
    import numpy as np

    rng = np.random.default_rng(99)
    data = rng.integers(0, 256, (k, SHARD), dtype=np.uint8)
    out = []
    for kern in (a, b):
        buf = np.zeros((k + m, SHARD), dtype=np.uint8)
        buf[:k] = data
        kern.encode(buf, k, m)
        out.append(buf[k:].copy())
    return bool(np.array_equal(out[0], out[1]))


SHAPES = (("k=30 m=6", 30, 6), ("k=76 m=16", 76, 16), ("k=212 m=43", 212, 43))
SHARD = 1408


def _fec_round(kernel: Any, buf: Any, k: int, m: int, seconds: float) -> float:
    """Best seconds per encode over about ``seconds`` of back-to-back calls (batches of ~5 ms)."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    reps = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            kernel.encode(buf, k, m)
        dt = (time.perf_counter() - t0) / reps
        best = min(best, dt)
        if time.perf_counter() > deadline:
            return best
        reps = max(1, min(2000, int(0.005 / max(dt, 1e-7))))


def _fec_rates(kernels: dict[str, Any], rounds: int, seconds: float) -> dict[str, dict[str, float]]:
    """MB/s of data per kernel and shape: the kernels take turns, each keeps its best round."""
    import numpy as np

    from punktfunk_gamestream import fec

    best: dict[str, dict[str, float]] = {name: {} for name in kernels}
    for label, k, m in SHAPES:
        rng = np.random.default_rng(k * 1000 + m)
        bufs = {}
        data = rng.integers(0, 256, (k, SHARD), dtype=np.uint8)
        for name, kernel in kernels.items():
            buf = fec.shard_buffer(k + m, SHARD)  # 64-byte aligned for every kernel, as the packetizer's
            buf[:k] = data
            kernel.encode(buf, k, m)  # warm-up (tables, pool, pointer arrays)
            bufs[name] = buf
        for _ in range(rounds):
            for name, kernel in kernels.items():
                secs = seconds / 8 if name == "numpy" else seconds
                dt = _fec_round(kernel, bufs[name], k, m, secs)
                best[name][label] = min(best[name].get(label, float("inf")), dt)
    return {name: {label: round(k * SHARD / best[name][label] / 1e6, 1) for label, k, _ in SHAPES}
            for name in kernels}


def cpu_flags() -> list[str]:
    from punktfunk_gamestream import fec

    flags = fec.cpu_flags() or frozenset()
    return [f for f in SIMD_FLAGS if f in flags]


def _leopard_rate(k: int, m: int, seconds: float) -> float | None:
    """Leopard GF(2^16) (punktfunk/1's FEC) at the same block shape, for comparison."""
    try:
        from reed_solomon_leopard import encode
    except ImportError:
        return None
    data = [os.urandom(SHARD) for _ in range(k)]
    encode(data, m)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        encode(data, m)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return k * SHARD / best / 1e6


def _packetize_send(quick: bool, encrypted: bool, gso: bool = True) -> dict[str, float]:
    import numpy as np

    from punktfunk_core.stages import AccessUnit, StreamSpec

    from punktfunk_gamestream.video import GameStreamPacketizer, GameStreamSender, VideoContext

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    spec = StreamSpec(width=1920, height=1080, fps=60)
    ctx = VideoContext(packet_size=1392 - (32 if encrypted else 0), fec_percent=20, min_fec_packets=2,
                       key=os.urandom(16) if encrypted else None, peer=sink.getsockname(), pacing=0.0)
    pk = GameStreamPacketizer(spec, {"context": ctx})
    sd = GameStreamSender(spec, {"context": ctx, "gso": gso})
    rng = np.random.default_rng(7)
    # 40 Mbit/s at 60 fps ≈ 83 kB per frame; an IDR every 60 frames at 4x that
    # access units shaped like encoder output: a start code and a slice NAL header first
    frames = [b"\x00\x00\x00\x01\x41" + rng.integers(1, 256, 83_000, dtype=np.uint8).tobytes(),
              b"\x00\x00\x00\x01\x65" + rng.integers(1, 256, 330_000, dtype=np.uint8).tobytes()]
    n = 120 if quick else 600
    wire = 0
    packets = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        key = i % 60 == 0
        au = AccessUnit(frames[1] if key else frames[0], key, i + 1, time.monotonic_ns())
        batch = pk.packetize(au)
        sd.send(batch)
        wire += batch.wire_bytes
        packets += len(batch.packets)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - t0
    sd.close()
    sink.close()
    return {"mbit_per_cpu_s": wire * 8 / cpu / 1e6, "mbit_per_s": wire * 8 / wall / 1e6,
            "packets_per_cpu_s": packets / cpu, "frames": n, "cpu_s": cpu, "gso": sd.gso}


def _kernels(notes: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Every FEC kernel this run measures, by column name, and the roles the ratios need."""
    from bench import nanors_native
    from punktfunk_gamestream import fec

    kernels: dict[str, Any] = {}
    roles: dict[str, str] = {}
    try:
        ours = fec.IsalKernel()
    except OSError as exc:
        notes.append(f"ISA-L not measured: {exc}")
    else:
        short = f"ISA-L {ours.library.version_text} {ours.variant}"
        if fec._cfec is not None:
            roles["ours"] = f"ours: {short}, compiled call"
            kernels[roles["ours"]] = ours
            roles["ctypes"] = f"{short} through ctypes"
            kernels[roles["ctypes"]] = fec.IsalKernel(batch=False)
        else:
            roles["ours"] = f"ours: {short} through ctypes"
            kernels[roles["ours"]] = ours
            notes.append("punktfunk_gamestream._fec is not built: ours is the ctypes path (needs gcc at install)")
        for lib in fec.isal_libraries():
            if lib is not ours.library:
                name = f"ISA-L {lib.version_text} {lib.variants[0]} ({lib.source})"
                kernels[name] = fec.IsalKernel(library=lib)
                roles.setdefault("older", name)
        roles["threads"] = f"{short}, 2 threads"
        kernels[roles["threads"]] = fec.IsalKernel(threads=2)
    kernels["numpy"] = fec.NumpyKernel()
    reference = fec.NumpyKernel()
    peers: list[tuple[str, Any]] = []
    try:
        shipped = NanorsKernel()
        peers.append((f"nanors, Moonlight's build ({shipped.variant})", shipped))
    except OSError as exc:
        notes.append(f"nanors as Moonlight ships it not measured: {exc}")
    try:
        built = nanors_native.build()
        native = NanorsKernel(built)
        peers.append(("nanors -march=native", native))
        notes.append(f"nanors -march=native: {nanors_native.SDIST} {nanors_native._version()} sdist from PyPI, "
                     f"built in bench/.cache/ with `{nanors_native.describe(built)}`")
    except (nanors_native.Unavailable, OSError) as exc:
        notes.append(f"nanors -march=native not measured: {exc}")
        roles["native_missing"] = str(exc)
    for name, peer in peers:
        if all(_same_parity(peer, reference, k, m) for _, k, m in SHAPES):
            kernels[name] = peer
            roles["native" if "native" in name else "shipped"] = name
        else:
            notes.append(f"{name} not measured: its parity differs from ours (a different nanors?)")
    return kernels, roles


def run(quick: bool = False) -> dict[str, Any]:
    from punktfunk_gamestream import fec

    load = os.getloadavg()
    notes: list[str] = []
    kernels, roles = _kernels(notes)
    rounds, seconds = (3, 0.05) if quick else (30, 0.06)
    rates = _fec_rates(kernels, rounds, seconds)
    leopard = {label: _leopard_rate(k, m, seconds) for label, k, m in SHAPES}
    rows = [[label, *[rates[n][label] for n in kernels],
             None if (rate := leopard[label]) is None else round(rate, 1)] for label, _k, _m in SHAPES]
    for kernel in kernels.values():
        kernel.close() if hasattr(kernel, "close") else None
    flags = cpu_flags()
    gfni = "gfni" in flags
    ratios = []
    ours = roles.get("ours")
    big = SHAPES[-1][0]
    if ours:
        for label, _k, _m in SHAPES:
            if "native" in roles:
                r = rates[ours][label] / rates[roles["native"]][label]
                ratios.append({"name": f"ours / nanors -march=native, same run ({label})", "value": round(r, 2),
                               "target": ">= 1.0", "ok": r >= 1.0})
            else:  # the peer could not be built: the row says why, the rest of the run goes on
                ratios.append({"name": f"ours / nanors -march=native ({label}): not measured, "
                                       f"{roles.get('native_missing', 'its parity differs from ours')}",
                               "value": None, "target": ">= 1.0", "ok": None})
        for label, _k, _m in SHAPES:
            if "shipped" in roles:
                ratios.append({"name": f"ours / nanors as Moonlight ships it ({label})",
                               "value": round(rates[ours][label] / rates[roles["shipped"]][label], 2),
                               "target": None, "ok": None})
        if "ctypes" in roles:
            for label, _k, _m in SHAPES:
                ratios.append({"name": f"one compiled call / ctypes call, same ISA-L ({label})",
                               "value": round(rates[ours][label] / rates[roles["ctypes"]][label], 2),
                               "target": None, "ok": None})
        if "older" in roles:
            ratios.append({"name": f"ours / {roles['older']} ({big})",
                           "value": round(rates[ours][big] / rates[roles["older"]][big], 2), "target": None,
                           "ok": None})
        mbps = rates[ours][big]
        ratios.append({"name": f"ours vs {GFNI_TARGET_MBPS:.0f} MB/s on a CPU with GFNI ({big})"
                               + ("" if gfni else "; this CPU has no GFNI, so the goal does not apply"),
                       "value": round(mbps / GFNI_TARGET_MBPS, 2), "target": ">= 1.0" if gfni else None,
                       "ok": (mbps >= GFNI_TARGET_MBPS) if gfni else None})
    plain = _packetize_send(quick, encrypted=False)
    sealed = _packetize_send(quick, encrypted=True)
    no_gso = _packetize_send(quick, encrypted=False, gso=False)
    send_rows = [
        [f"plain (packet 1392, FEC 20 %, GSO {'on' if plain['gso'] else 'unavailable'})",
         round(plain["mbit_per_cpu_s"]), round(plain["packets_per_cpu_s"])],
        ["plain, GSO off", round(no_gso["mbit_per_cpu_s"]), round(no_gso["packets_per_cpu_s"])],
        [f"AES-GCM (packet 1360, FEC 20 %, GSO {'on' if sealed['gso'] else 'unavailable'})",
         round(sealed["mbit_per_cpu_s"]), round(sealed["packets_per_cpu_s"])],
    ]
    libs = "; ".join(f"{lib.label} at {lib.path.split('site-packages/')[-1]}, variants here: {', '.join(lib.variants)}"
                     for lib in fec.isal_libraries()) or "none"
    notes[:0] = [
        f"CPU: {cpuinfo('model name') or 'unknown'}; {os.cpu_count()} cores; SIMD flags: {' '.join(flags) or 'none'}"
        f"{'' if gfni else ' (no GFNI, no AVX-512)' if 'avx512f' not in flags else ' (no GFNI)'}.",
        f"ISA-L found: {libs}.",
        f"load average when the run started: {load[0]:.2f} on {os.cpu_count()} CPUs; {rounds} rounds, the kernels "
        f"take turns and each figure is the kernel's best round ({seconds:g} s of back-to-back encodes per round).",
        "every kernel is called once per block from Python (ours through its encode(), nanors through ctypes with "
        "a cached pointer array), as the host calls it; the packetizer makes one call per frame for all its blocks.",
    ]
    series = [n for n in kernels if n != "numpy"]
    return {
        "title": "GameStream FEC and packetize + send",
        "what": ("Reed-Solomon GF(2^8) parity byte-compatible with nanors (what Moonlight decodes) for one "
                 "FEC block of 1408-byte shards, in MB/s of data, one thread unless marked; and the gamestream "
                 "packetizer + sender (NV headers, multi-block FEC, optional AES-GCM, unpaced) to a loopback UDP "
                 "socket, in wire Mbit/s per CPU-second."),
        "commands": ["python -m bench --only fec"],
        "tables": [
            {"title": "FEC encode (MB/s of data)", "headers": ["block", *kernels, "Leopard GF(2^16)"], "rows": rows},
            {"title": "packetize + send per core", "headers": ["case", "Mbit/s per CPU-s", "packets per CPU-s"],
             "rows": send_rows},
        ],
        "ratios": ratios,
        "plot": {"kind": "bar", "title": "FEC encode throughput, 1408-byte shards", "ylabel": "MB/s of data",
                 "labels": [s[0] for s in SHAPES],
                 "series": {n: [rates[n][s[0]] for s in SHAPES] for n in series}, "log": False},
        "notes": notes,
        "raw": {"fec_mbps": rates, "leopard_mbps": leopard, "cpu_flags": flags, "load_average": load,
                "packetize_send": {"plain": plain, "plain_no_gso": no_gso, "aes_gcm": sealed}},
    }


if __name__ == "__main__":  # pragma: no cover - manual use
    import json

    print(json.dumps(run(quick=True), indent=1, default=str))
