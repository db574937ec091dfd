"""punktfunk/1 data plane alone: access units → shards → Reed–Solomon parity
(GF(2^16), 20 %) → AES-128-GCM per datagram → UDP on loopback, GSO on vs off.

Pre-encoded access units (random bytes sized like a 1080p60 stream: 60 kB
P-frames, a 250 kB keyframe every 60 frames) go through the real
``NativePacketizer`` and ``NativeSender`` back to back (no pacing) to a bound
UDP socket on 127.0.0.1 that nobody reads, so only the sending side's CPU is
counted. The rate is video payload bits per CPU-second of the whole process
(``time.process_time``: user + system, all threads), i.e. Gbit/s per core;
wire bits (headers, parity, tags) are shown next to it. The same run with GSO
forced off gives the GSO ratio, and the same with the portable sealer
(cryptography's AESGCM, one call per datagram) shows what the compiled batch
sealer buys. This VM's speed drifts by ±20 % within minutes, so the cases
run in alternating rounds and each reports its median round (min–max next
to it). Importing this module does nothing.
"""

from __future__ import annotations

import os
import random
import resource
import socket
import time
from typing import Any

TARGET_GBPS_PER_CORE = 2.0


def _units(n_distinct: int = 61) -> list[Any]:
    from punktfunk_core.stages import AccessUnit

    rnd = random.Random(7)
    out = []
    for i in range(n_distinct):
        size = 250_000 if i == 0 else rnd.randint(45_000, 75_000)
        out.append(AccessUnit(os.urandom(size), i == 0, i + 1, 0))
    return out


def _run_case(gso: bool, seconds: float, fec_percent: int = 20, shard: int = 1200,
              batch_seal: bool = True) -> dict[str, Any]:
    from punktfunk_native.datapath import FecParams, NativePacketizer, NativeSender

    units = _units()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = NativeSender(tx, sink.getsockname(), 60, gso=gso, pace_percent=0)
    pk = NativePacketizer(os.urandom(16), FecParams(fec_percent, 2, shard, 64, 64), batch_seal=batch_seal)
    # warm up (first RS call initialises tables)
    for au in units[:5]:
        sender.send(pk.packetize(au))
    payload = wire = packets = frames = 0
    fec_ns = seal_ns = sock_ns = 0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0, w0 = time.process_time(), time.perf_counter()
    deadline = w0 + seconds
    i = 0
    while True:
        au = units[i % len(units)]
        b = pk.packetize(au)
        sender.send(b)
        payload += len(au.data)
        wire += b.wire_bytes
        packets += b.meta["count"]
        fec_ns += b.extra_ns["fec"]
        seal_ns += b.extra_ns["seal"]
        sock_ns += b.extra_ns["sock"]
        frames += 1
        i += 1
        if i % 8 == 0 and time.perf_counter() >= deadline:
            break
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    gso_used = sender.gso
    sender.close()
    sink.close()
    return {
        "gso": gso_used,
        "batch_seal": pk._sealer is not None,
        "frames": frames,
        "packets": packets,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "payload_gbps_per_core": payload * 8 / cpu / 1e9,
        "wire_gbps_per_core": wire * 8 / cpu / 1e9,
        "payload_gbps_wall": payload * 8 / wall / 1e9,
        "us_per_packet_cpu": cpu / packets * 1e6,
        "fec_us_per_frame": fec_ns / frames / 1e3,
        "seal_us_per_frame": seal_ns / frames / 1e3,
        "sock_us_per_frame": sock_ns / frames / 1e3,
        "user_us_per_frame": (r1.ru_utime - r0.ru_utime) / frames * 1e6,
        "sys_us_per_frame": (r1.ru_stime - r0.ru_stime) / frames * 1e6,
        "send_dropped": sender.send_dropped,
    }


def _stage_rates(seconds: float) -> dict[str, float]:
    """Packetize alone (FEC + seal, no socket) and the receiver alone (open +
    reassemble), in payload Gbit/s per CPU core."""
    from punktfunk_native.datapath import FecParams, NativePacketizer, NativeReceiver

    units = _units()
    key = os.urandom(16)
    pk = NativePacketizer(key, FecParams(20, 2, 1200, 64, 64))
    batches = [pk.packetize(au) for au in units]
    out: dict[str, float] = {}
    payload = 0
    c0 = time.process_time()
    i = 0
    while time.process_time() - c0 < seconds / 2:
        au = units[i % len(units)]
        pk.packetize(au)
        payload += len(au.data)
        i += 1
    out["packetize_gbps_per_core"] = payload * 8 / (time.process_time() - c0) / 1e9
    # receive: drop one datagram in 20 so the FEC decode path is part of it
    payload = 0
    c0 = time.process_time()
    rounds = 0
    while time.process_time() - c0 < seconds / 2:
        rx = NativeReceiver(key)
        for b in batches:
            for j, p in enumerate(b.packets):
                if j % 20 != 7:
                    rx.push(p)
        payload += sum(len(au.data) for au in units)
        rounds += 1
    out["receive_gbps_per_core"] = payload * 8 / (time.process_time() - c0) / 1e9
    return out


def _median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median payload rate, plus the spread of all rounds."""
    ranked = sorted(rounds, key=lambda r: r["payload_gbps_per_core"])
    mid = dict(ranked[len(ranked) // 2])
    mid["rounds_gbps"] = [round(r["payload_gbps_per_core"], 3) for r in rounds]
    mid["packets"] = sum(r["packets"] for r in rounds)
    return mid


def run(quick: bool) -> dict[str, Any]:
    from punktfunk_core.transport import gso_supported

    from punktfunk_native.datapath import batch_sealer_available

    seconds = 1.0 if quick else 2.0
    n_rounds = 1 if quick else 5
    load = os.getloadavg()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    have_gso = gso_supported(probe)
    probe.close()
    have_sealer = batch_sealer_available()
    cases = {"GSO on": (True, True), "GSO off": (False, True), "GSO on, portable sealer": (True, False)}
    if not have_gso:
        del cases["GSO on"], cases["GSO on, portable sealer"]
        cases["GSO off, portable sealer"] = (False, False)
    if not have_sealer:  # the "batch" cases would silently be the portable path
        cases = {k: v for k, v in cases.items() if not v[1]}
        cases.setdefault("GSO off, portable sealer", (False, False))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for _ in range(n_rounds):  # alternate, so drift hits every case alike
        for name, (gso, batch) in cases.items():
            results[name].append(_run_case(gso, seconds, batch_seal=batch))
    med = {name: _median_round(r) for name, r in results.items()}
    rows = []
    for name, r in med.items():
        spread = r["rounds_gbps"]
        rows.append([name, round(r["payload_gbps_per_core"], 3),
                     f"{min(spread):.2f}–{max(spread):.2f}" if len(spread) > 1 else None,
                     round(r["wire_gbps_per_core"], 3),
                     round(r["us_per_packet_cpu"], 2), round(r["fec_us_per_frame"], 1),
                     round(r["seal_us_per_frame"], 1), round(r["sock_us_per_frame"], 1), r["packets"]])
    on = med.get("GSO on") or med.get("GSO on, portable sealer")
    off = med.get("GSO off") or med.get("GSO off, portable sealer")
    stages = _stage_rates(seconds)
    rows.append(["packetize only (FEC + seal, no socket)", round(stages["packetize_gbps_per_core"], 3),
                 None, None, None, None, None, None, None])
    rows.append(["client receive (open + reassemble, 5 % loss)", round(stages["receive_gbps_per_core"], 3),
                 None, None, None, None, None, None, None])
    headline = on or off
    assert headline is not None
    what = "GSO on" if on else "GSO unavailable"
    if not have_sealer:
        what += ", portable sealer: the batch sealer was not built"
    ratios = [{"name": f"payload Gbit/s per core ({what})",
               "value": round(headline["payload_gbps_per_core"], 3), "target": f">= {TARGET_GBPS_PER_CORE}",
               "ok": headline["payload_gbps_per_core"] >= TARGET_GBPS_PER_CORE}]
    if on is not None and off is not None and on["batch_seal"] == off["batch_seal"]:
        ratios.append({"name": "GSO on / GSO off (Gbit/s per core)",
                       "value": round(on["payload_gbps_per_core"] / off["payload_gbps_per_core"], 2),
                       "target": None, "ok": None})
    if "GSO on" in med and "GSO on, portable sealer" in med:
        ratios.append({"name": "batch sealer / portable sealer (cryptography AESGCM per datagram), GSO on",
                       "value": round(med["GSO on"]["payload_gbps_per_core"]
                                      / med["GSO on, portable sealer"]["payload_gbps_per_core"], 2),
                       "target": None, "ok": None})
    return {
        "title": "punktfunk/1 data plane: sealed + FEC'd + sent per CPU core",
        "what": ("Pre-encoded access units (≈60 kB P-frames, a 250 kB keyframe every 60) through the real native "
                 "packetizer (1200-byte shards, Reed-Solomon GF(2^16) 20 % parity, AES-128-GCM per datagram) and "
                 "sender (no pacing; compiled batch sealer unless marked portable) to an unread UDP socket on "
                 "127.0.0.1; CPU = process user+system time. "
                 "Gbit/s counts video payload; wire Gbit/s adds headers, parity and tags."),
        "tables": [{"title": "per CPU core",
                    "headers": ["case", "payload Gbit/s (median round)", "rounds min–max", "wire Gbit/s",
                                "CPU µs/datagram", "FEC µs/frame", "seal µs/frame", "socket µs/frame", "datagrams"],
                    "rows": rows}],
        "ratios": ratios,
        "plot": {"kind": "bar", "title": "native data plane, Gbit/s per core", "ylabel": "Gbit/s",
                 "labels": ["payload", "wire"],
                 "series": {r[0]: [r[1], r[3]] for r in rows if r[3] is not None},
                 "log": False, "target": TARGET_GBPS_PER_CORE},
        "notes": ([] if have_gso else ["UDP GSO is not supported by this kernel: only the plain-send case ran"]) + (
            [] if have_sealer else ["the batch sealer (punktfunk_native._seal) was not built: every case used the "
                                    "portable cryptography path (install gcc and libssl-dev, then reinstall)"]) + [
            f"{n_rounds} alternating round(s) of {seconds:g} s per case; each row is the case's median round",
            f"load average when the run started: {load[0]:.2f} on {os.cpu_count()} CPUs (other work on the machine "
            "slows AES-GCM and the interpreter alike; compare the two cases of one run, not runs with each other)",
            "fec/seal/socket columns are wall-clock µs per frame (perf_counter) and include preemption on a busy "
            "machine; the Gbit/s columns use process CPU time",
        ],
        "raw": {"median_rounds": med, "stages": stages, "seconds": seconds, "rounds": n_rounds},
    }


if __name__ == "__main__":  # pragma: no cover - manual run
    import json

    print(json.dumps(run(quick=True), indent=2, default=str))
