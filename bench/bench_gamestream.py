"""GameStream: FEC encode throughput and packetize + send rate per core.

``run(quick)`` measures, in this process:

* nanors-compatible GF(2^8) parity for a k=212, m=43 block and a k=76, m=16
  block of 1408-byte shards (MB/s of data): Intel ISA-L ``ec_encode_data``
  through ctypes (1 and 2 threads), the numpy table fallback, and compiled
  nanors itself, measured in the same run: the copy inside moonlight-python's
  ``libmoonlight-common-c`` (the build Moonlight clients decode with; its own
  CPU dispatch picks the kernel), called through ctypes after checking that
  its parity equals ours. The design notes' nanors figures are shown beside
  it for reference;
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
from typing import Any

#: compiled nanors (b1e3c22) on this machine type, from shared/design/gamestream.md
NANORS_MBPS = {"k=212 m=43": 2600.0, "k=76 m=16": 7000.0}
NANORS_INSTALL = "pip install moonlight-python (in the test extra: pip install -e '.[test]')"


class NanorsKernel:
    """Compiled nanors as Moonlight ships it: ``libmoonlight-common-c.so`` from
    the moonlight-python wheel, through ctypes. ``reed_solomon_init`` picks the
    SIMD variant for this CPU (the ``*_fn`` pointers), as in a client.
    Raises OSError when the library or its symbols are missing."""

    def __init__(self) -> None:
        import ctypes
        import importlib.util
        from pathlib import Path

        spec = importlib.util.find_spec("moonlight_python")
        if spec is None or not spec.submodule_search_locations:
            raise OSError(f"moonlight-python is not installed: {NANORS_INSTALL}")
        libs = [p for d in spec.submodule_search_locations for p in Path(d).glob("libmoonlight-common-c*.so*")]
        if not libs:
            raise OSError("moonlight-python has no libmoonlight-common-c shared library")
        lib = ctypes.CDLL(str(libs[0]))
        try:
            lib.reed_solomon_init.restype = None
            lib.reed_solomon_init()
            fn = {n: ctypes.c_void_p.in_dll(lib, f"reed_solomon_{n}_fn").value for n in ("new", "encode", "release")}
        except (AttributeError, ValueError) as exc:
            raise OSError(f"libmoonlight-common-c has no usable nanors entry points: {exc}") from None
        if not all(fn.values()):
            raise OSError("nanors did not initialise its dispatch table")
        self.variant = next((v for v in ("avx512", "avx2", "ssse3", "def")
                             if ctypes.cast(getattr(lib, f"reed_solomon_encode_{v}", None) or 0, ctypes.c_void_p).value
                             == fn["encode"]), "unknown")
        self._new = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int, ctypes.c_int)(fn["new"])
        self._encode = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                        ctypes.c_int)(fn["encode"])
        self._release = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(fn["release"])
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
SHAPES = (("k=212 m=43", 212, 43), ("k=76 m=16", 76, 16))
SHARD = 1408
TARGET_MBPS = 1000.0


def _fec_rate(kernel: Any, k: int, m: int, seconds: float) -> float:
    import numpy as np

    rng = np.random.default_rng(k * 1000 + m)
    buf = np.zeros((k + m, SHARD), dtype=np.uint8)
    buf[:k] = rng.integers(0, 256, (k, SHARD), dtype=np.uint8)
    kernel.encode(buf, k, m)  # warm-up (tables, pool)
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
            break
        reps = max(1, min(200, int(0.05 / max(dt, 1e-6))))
    return k * SHARD / best / 1e6


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


def run(quick: bool = False) -> dict[str, Any]:
    from punktfunk_gamestream import fec

    seconds = 0.4 if quick else 2.0
    notes: list[str] = []
    kernels: dict[str, Any] = {"numpy": fec.NumpyKernel()}
    try:
        kernels["ISA-L"] = fec.IsalKernel()
        kernels["ISA-L 2 threads"] = fec.IsalKernel(threads=2)
    except OSError as exc:
        notes.append(f"ISA-L not measured: {exc} (Debian/Ubuntu: apt-get install libisal2)")
    try:
        nanors: NanorsKernel | None = NanorsKernel()
    except OSError as exc:
        nanors = None
        notes.append(f"compiled nanors not measured: {exc}")
    if nanors is not None:
        if all(_same_parity(nanors, kernels["numpy"], k, m) for _, k, m in SHAPES):
            kernels[f"nanors ({nanors.variant})"] = nanors
        else:
            notes.append("compiled nanors not measured: its parity differs from ours (a different nanors build?)")
    rates: dict[str, dict[str, float]] = {name: {} for name in kernels}
    for label, k, m in SHAPES:
        for name, kernel in kernels.items():
            secs = seconds / 4 if name == "numpy" else seconds
            rates[name][label] = round(_fec_rate(kernel, k, m, secs), 1)
    leopard = {label: _leopard_rate(k, m, seconds) for label, k, m in SHAPES}
    rows = []
    for label, _k, _m in SHAPES:
        lp = leopard[label]
        rows.append([label, *[rates[n][label] for n in kernels], NANORS_MBPS[label],
                     round(lp, 1) if lp is not None else None])
    if nanors is not None:
        nanors.close()
    measured_nanors = next((n for n in kernels if n.startswith("nanors")), None)
    ratios = []
    if "ISA-L" in rates:
        big = SHAPES[0][0]
        ratios.append({"name": f"ISA-L / numpy ({big})", "value": round(rates["ISA-L"][big] / rates["numpy"][big], 1),
                       "target": None, "ok": None})
        ratios.append({"name": f"ISA-L 1 thread vs {TARGET_MBPS:.0f} MB/s target ({big})",
                       "value": round(rates["ISA-L"][big] / TARGET_MBPS, 2), "target": ">= 1.0",
                       "ok": rates["ISA-L"][big] >= TARGET_MBPS})
        ratios.append({"name": f"ISA-L 2 threads vs {TARGET_MBPS:.0f} MB/s target ({big})",
                       "value": round(rates["ISA-L 2 threads"][big] / TARGET_MBPS, 2), "target": ">= 1.0",
                       "ok": rates["ISA-L 2 threads"][big] >= TARGET_MBPS})
        if measured_nanors:
            for label, _k, _m in SHAPES:
                ratios.append({"name": f"ISA-L / compiled nanors, same run ({label})",
                               "value": round(rates["ISA-L"][label] / rates[measured_nanors][label], 2),
                               "target": None, "ok": None})
            ratios.append({"name": f"compiled nanors vs {TARGET_MBPS:.0f} MB/s ({big})",
                           "value": round(rates[measured_nanors][big] / TARGET_MBPS, 2), "target": None, "ok": None})
        ratios.append({"name": f"ISA-L / nanors figure of the design notes ({big})",
                       "value": round(rates["ISA-L"][big] / NANORS_MBPS[big], 2), "target": None, "ok": None})
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
    notes.append(f"CPU: {_cpu_model()}; {os.cpu_count()} cores. 'nanors (design notes)' is the figure "
                 "shared/design/gamestream.md gives for compiled nanors on this machine type, not measured here; "
                 "the measured nanors column is the library Moonlight ships, on this machine, in this run. "
                 "Each figure is the best of repeated encodes over the measuring time.")
    return {
        "title": "GameStream FEC and packetize + send",
        "what": ("Reed-Solomon GF(2^8) parity byte-compatible with nanors (what Moonlight decodes) for one "
                 "FEC block of 1408-byte shards, in MB/s of data; and the gamestream packetizer + sender "
                 "(NV headers, multi-block FEC, optional AES-GCM, unpaced) to a loopback UDP socket, in wire "
                 "Mbit/s per CPU-second."),
        "commands": ["python -m bench --only fec"],
        "tables": [
            {"title": "FEC encode (MB/s of data)",
             "headers": ["block", *kernels, "nanors (design notes)", "Leopard GF(2^16)"], "rows": rows},
            {"title": "packetize + send per core", "headers": ["case", "Mbit/s per CPU-s", "packets per CPU-s"],
             "rows": send_rows},
        ],
        "ratios": ratios,
        "plot": {"kind": "bar", "title": "FEC encode throughput", "ylabel": "MB/s",
                 "labels": [s[0] for s in SHAPES],
                 "series": {**{n: [rates[n][s[0]] for s in SHAPES] for n in kernels},
                            "nanors (design notes)": [NANORS_MBPS[s[0]] for s in SHAPES]},
                 "log": True, "target": TARGET_MBPS},
        "notes": notes,
        "raw": {"fec_mbps": rates, "leopard_mbps": leopard,
                "packetize_send": {"plain": plain, "plain_no_gso": no_gso, "aes_gcm": sealed}},
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":  # pragma: no cover - manual use
    import json

    print(json.dumps(run(quick=True), indent=1, default=str))
