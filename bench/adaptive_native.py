"""One point of the adaptive-FEC loss sweep on punktfunk/1 (see bench/bench_adaptive.py).

The real data plane in one process, on a simulated clock: access units of
random bytes sized like a 720p60 stream go through the real
``NativePacketizer`` (Reed–Solomon parity, AES-GCM) with the parity the
session's real ``AdaptiveControl`` chooses (or the fixed 20 %, at least 2),
every datagram through the client's ``LinkImpairment`` (the ``--loss-pattern``
of the reference client) and the real ``NativeReceiver`` (authenticate,
reassemble, rebuild). Every 2 s of stream time the receiver's counts become a
``LossReport`` as the client's report would carry them. A frame the receiver
gives up makes the "client" ask for a keyframe (at most every 0.1 s, as the
reference client does); the host's ``KeyframeCoalescer`` decides whether the
next frame is an IDR. Frame sizes follow the bitrate target, so adaptive rate
control changes them. No encoder and no sockets: what is measured is what FEC,
the controllers and the loss do, for many more frames than a real-time run
could send. Importing this module does nothing.
"""

from __future__ import annotations

import os
import random
from typing import Any

FPS = 60
START_KBPS = 6000
#: an IDR is this many times a P-frame
KEYFRAME_FACTOR = 6.0
REPORT_S = 2.0
#: the reference client's first report comes sooner (FIRST_REPORT_S)
FIRST_REPORT_S = 0.5
#: the reference client asks for a keyframe at most this often
REQUEST_EVERY_S = 0.1


def sweep_point(mode: str, pattern: str, seconds: float) -> dict[str, Any]:
    """``mode`` "adaptive" | "fixed" (20 %) | "fixed:PERCENT"; ``pattern`` "uniform:0.05" | "ge:p,r,h";
    ``seconds`` of stream time."""
    from punktfunk_core.adaptive import AdaptiveControl, FecPolicy, LossReport, RatePolicy
    from punktfunk_core.stages import AccessUnit

    from punktfunk_native.client.impair import LinkImpairment, LossPattern
    from punktfunk_native.datapath import FecParams, NativePacketizer, NativeReceiver

    clock = [0.0]
    target = [START_KBPS]
    adaptive = mode == "adaptive"
    share = float(mode.partition(":")[2] or 20)
    control = AdaptiveControl(FecPolicy(mode="adaptive" if adaptive else "fixed", fixed_percent=share,
                                        start_fixed=True),
                              RatePolicy(mode="adaptive" if adaptive else "fixed"), START_KBPS,
                              set_bitrate=lambda kbps: target.__setitem__(0, kbps), clock=lambda: clock[0])
    key = os.urandom(16)
    packetizer = NativePacketizer(key, FecParams(20, 2, 1200, 64, 64), parity_for=control.fec.parity_for)
    receiver = NativeReceiver(key)
    link = LinkImpairment(LossPattern.parse(pattern), seed=19)
    rnd = random.Random(7)
    frames = int(seconds * FPS)
    sent: dict[str, Any] = {"frames_sent": 0, "frames_unrecoverable": 0, "keyframes": 0, "wire_bytes": 0,
                            "payload_bytes": 0}
    reported = {"expected": 0, "lost": 0, "runs": 0, "unrec": 0}
    next_report = FIRST_REPORT_S
    last_report = 0.0
    after_first: int | None = None
    keyframe_due = True  # the stream starts with one (not counted)
    last_request = -1.0
    unrec = 0
    kbps_sum = 0
    for i in range(frames):
        now = clock[0] = i / FPS
        size = max(200, int(target[0] * 1000 / 8 / FPS * rnd.lognormvariate(0, 0.3)))
        keyframe = keyframe_due
        if keyframe:
            size = int(size * KEYFRAME_FACTOR)
            sent["keyframes"] += i > 0
            keyframe_due = False
        batch = packetizer.packetize(AccessUnit(os.urandom(size), keyframe, i + 1, 0))
        sent["frames_sent"] += 1
        sent["wire_bytes"] += batch.wire_bytes
        sent["payload_bytes"] += size
        kbps_sum += target[0]
        for pkt in batch.packets:
            if not link.drop(len(pkt), now):
                receiver.push(bytes(pkt))
        if receiver.reasm.frames_unrecoverable != unrec:
            unrec = receiver.reasm.frames_unrecoverable
            # the client asks (throttled); the host forces one IDR per burst
            if now - last_request >= REQUEST_EVERY_S:
                last_request = now
                keyframe_due = control.keyframe(now)
        if now + 1 / FPS >= next_report:
            span, last_report = next_report - last_report, next_report
            next_report += REPORT_S
            if after_first is None:
                after_first = receiver.reasm.frames_unrecoverable
            totals = {"expected": receiver.packets_expected, "lost": receiver.packets_lost,
                      "runs": receiver.loss_runs, "unrec": receiver.reasm.frames_unrecoverable}
            d = {k: v - reported[k] for k, v in totals.items()}
            reported = totals
            control.observe(LossReport(span, d["expected"], d["lost"], d["runs"], d["unrec"]))
    # frames still being waited for at the end are not counted as lost
    sent["frames_unrecoverable"] = receiver.reasm.frames_unrecoverable
    sent["unrecoverable_after_first_report"] = sent["frames_unrecoverable"] - (after_first or 0)
    sent["mean_target_kbps"] = round(kbps_sum / max(1, frames))
    sent["parity_pct"] = round(100 * control.fec.parity_shards / max(1, control.fec.data_shards), 2)
    sent["packets_lost_pct"] = round(100 * receiver.packets_lost / max(1, receiver.packets_expected), 2)
    return sent
