"""Fault injection for tests: stages a test host selects through its config.

Loaded into real host processes with ``PUNKTFUNK_PLUGINS=pf_faults`` (tests put
this folder on PYTHONPATH). Nothing here is in the shipped code: a test picks
these stages the way any third-party plugin's stages are picked, by name in
the protocol's config section (docs/plugins.md, "Replacing or wrapping a
protocol's stages"), e.g.::

    [gamestream]
    video_sender = "drop-packets"
    video_sender_options = { second_of = [20, 21] }

* sender ``drop-packets``: wraps the sender named by option ``inner``
  (default ``gamestream``) and drops datagrams of chosen GameStream video
  frames (``batch.meta["frame_index"]``): ``all_but_first_of`` sends only their
  first datagram (loss beyond FEC), ``second_of`` all but their second (FEC
  repairs it); or, for every frame, a seeded random loss: ``rate`` drops each
  datagram with that probability (uniform, ``seed``), ``ge = [p, r, loss_bad]``
  a Gilbert-Elliott channel (good → bad with p per datagram, bad → good with r,
  in the bad state each datagram is lost with ``loss_bad``), ``cap_kbps`` a
  token bucket (``burst_ms`` deep) that drops what exceeds that rate. IPC
  ``faults.loss`` changes ``rate``/``ge``/``cap_kbps`` of the running stage
  (``null`` turns one off), so a test can start and stop loss mid-stream;
* sender ``drop-audio``: wraps ``inner`` likewise and drops the GameStream audio
  data packet (RTP payload type 97) whose sequence number % ``every`` == 1;
* packetizer ``gamestream-probe``: the ``gamestream`` packetizer with FEC
  blocks of at most ``block_data_shards`` data shards and the SHA-1 (16 hex
  digits) of the access units of frames ``hash_frames`` as sent.

IPC ``faults.status``: ``{"dropped": {stage: datagrams}, "frame_hashes": {frame index: sha1},
"sent": {stage: datagrams handed on}, "frames": {stage: frames}, "keyframes": {stage: keyframes},
"wire_bytes": {stage: bytes of the datagrams before the drop}, "payload_bytes": {stage: access unit bytes}}``.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

from punktfunk_core import hookimpl
from punktfunk_core.stages import PacketBatch, Sender, StreamSpec

#: written by the session threads, read by the IPC command (ints and dict items: atomic)
DROPPED: dict[str, int] = {}
SENT: dict[str, int] = {}
FRAMES: dict[str, int] = {}
KEYFRAMES: dict[str, int] = {}
WIRE_BYTES: dict[str, int] = {}
PAYLOAD_BYTES: dict[str, int] = {}
FRAME_HASHES: dict[str, str] = {}
#: the running random-loss stages (faults.loss changes them)
LOSSY: list[Any] = []


class WrappedSender(Sender):
    """Hands batches on to another sender, after ``keep(batch)`` chose the datagrams."""

    label = ""

    def __init__(self, registry: Any, spec: StreamSpec, options: dict[str, Any], own: tuple[str, ...]) -> None:
        inner_options = {k: v for k, v in options.items() if k not in (*own, "inner")}
        self.inner = registry.create("sender", str(options.get("inner", "gamestream")), spec, inner_options)
        self.waits = self.inner.waits
        DROPPED.setdefault(self.label, 0)
        for counter in (SENT, FRAMES, KEYFRAMES, WIRE_BYTES, PAYLOAD_BYTES):
            counter.setdefault(self.label, 0)

    @property
    def send_dropped(self) -> int | None:  # type: ignore[override]
        return self.inner.send_dropped

    @property
    def packets_sent(self) -> Any:
        return getattr(self.inner, "packets_sent", None)

    def keep(self, batch: PacketBatch) -> list[Any] | None:
        """The datagrams to send, or None for all of them."""
        raise NotImplementedError

    def send(self, batch: PacketBatch) -> None:
        FRAMES[self.label] += 1
        KEYFRAMES[self.label] += int(batch.keyframe)
        WIRE_BYTES[self.label] += batch.wire_bytes
        PAYLOAD_BYTES[self.label] += int(batch.meta.get("payload_bytes", 0))
        kept = self.keep(batch)
        if kept is not None:
            DROPPED[self.label] += len(batch.packets) - len(kept)
            batch.packets = kept
            batch.datagram_size = 0  # a gap: no longer one run of equal datagrams
        SENT[self.label] += len(batch.packets)
        self.inner.send(batch)

    def close(self) -> None:
        self.inner.close()


class RandomLoss:
    """Seeded datagram loss: uniform (``rate``), Gilbert-Elliott (``ge``) and a token bucket (``cap_kbps``)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.rng = random.Random(int(options.get("seed", 1)))
        self.bad = False  # Gilbert-Elliott state
        self.tokens = 0.0  # token bucket, bytes
        self.last = time.monotonic()
        self.burst_ms = float(options.get("burst_ms", 20.0))
        self.rate = 0.0
        self.ge: tuple[float, ...] | None = None
        self.cap = 0.0
        self.configure(options)

    def configure(self, options: dict[str, Any]) -> None:
        """Apply ``rate``, ``ge``, ``cap_kbps`` (a key present with ``None`` turns that one off)."""
        if "rate" in options:
            self.rate = float(options["rate"] or 0.0)
        if "ge" in options:
            self.ge = tuple(float(x) for x in options["ge"]) if options["ge"] else None
        if "cap_kbps" in options:
            self.cap = float(options["cap_kbps"] or 0.0) * 1000 / 8  # bytes per second

    @property
    def active(self) -> bool:
        return bool(self.rate or self.ge or self.cap)

    def lost(self, size: int) -> bool:
        if self.cap:
            now = time.monotonic()
            depth = self.cap * self.burst_ms / 1000
            self.tokens = min(depth, self.tokens + (now - self.last) * self.cap)
            self.last = now
            if self.tokens < size:
                return True
            self.tokens -= size
        if self.ge is not None:
            p, r, loss_bad = self.ge
            self.bad = self.rng.random() >= r if self.bad else self.rng.random() < p
            if self.bad and self.rng.random() < loss_bad:
                return True
        return bool(self.rate) and self.rng.random() < self.rate


class DropPackets(WrappedSender):
    label = "drop-packets"

    def __init__(self, registry: Any, spec: StreamSpec, options: dict[str, Any]) -> None:
        super().__init__(registry, spec, options, ("all_but_first_of", "second_of", "rate", "seed", "ge",
                                                   "cap_kbps", "burst_ms"))
        self.all_but_first = {int(x) for x in options.get("all_but_first_of", [])}
        self.second = {int(x) for x in options.get("second_of", [])}
        self.loss = RandomLoss(options)
        LOSSY.append(self.loss)

    def keep(self, batch: PacketBatch) -> list[Any] | None:
        frame = batch.meta.get("frame_index")
        packets = batch.packets
        if frame in self.all_but_first:
            return [packets[0]]
        if frame in self.second and len(packets) > 2:
            return [packets[0], *packets[2:]]
        loss = self.loss
        if loss.active:
            kept = [p for p in packets if not loss.lost(len(p))]
            return kept if len(kept) != len(packets) else None
        return None

    def close(self) -> None:
        if self.loss in LOSSY:
            LOSSY.remove(self.loss)
        super().close()


class DropAudio(WrappedSender):
    label = "drop-audio"

    def __init__(self, registry: Any, spec: StreamSpec, options: dict[str, Any]) -> None:
        super().__init__(registry, spec, options, ("every",))
        self.every = int(options.get("every", 8))

    def keep(self, batch: PacketBatch) -> list[Any] | None:
        from punktfunk_gamestream.wire import AUDIO_PT

        kept = [p for p in batch.packets
                if not (p[1] == AUDIO_PT and int.from_bytes(p[2:4], "big") % self.every == 1)]
        return kept if len(kept) != len(batch.packets) else None


def _probe_packetizer(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_gamestream.video import GameStreamPacketizer, strip_leading_sei

    class ProbePacketizer(GameStreamPacketizer):
        def __init__(self) -> None:
            opts = dict(options)
            self.block_limit = int(opts.pop("block_data_shards", 0))
            self.hash_frames = {int(x) for x in opts.pop("hash_frames", [])}
            super().__init__(spec, opts)

        def packetize(self, au: Any) -> PacketBatch:
            batch = super().packetize(au)
            frame = batch.meta["frame_index"]
            if frame in self.hash_frames:  # what Moonlight reassembles: the unit as sent
                sent = strip_leading_sei(au.data, au.codec) if self.strip_sei else au.data
                FRAME_HASHES[str(frame)] = hashlib.sha1(sent).hexdigest()[:16]
            return batch

    return ProbePacketizer()


@hookimpl
def register_stages(registry):
    registry.add("sender", "drop-packets", lambda spec, options: DropPackets(registry, spec, options),
                 description="drops datagrams of chosen GameStream video frames (tests)")
    registry.add("sender", "drop-audio", lambda spec, options: DropAudio(registry, spec, options),
                 description="drops every Nth GameStream audio data packet (tests)")
    registry.add("packetizer", "gamestream-probe", _probe_packetizer,
                 description="gamestream packetizer with small FEC blocks and frame hashes (tests)")


@hookimpl
def ipc_commands(host, register):
    def loss(args: dict) -> dict:
        for stage in list(LOSSY):
            stage.configure(args)
        return {"stages": len(LOSSY)}

    register("faults.status", lambda _args: {"dropped": dict(DROPPED), "frame_hashes": dict(FRAME_HASHES),
                                            "sent": dict(SENT), "frames": dict(FRAMES),
                                            "keyframes": dict(KEYFRAMES), "wire_bytes": dict(WIRE_BYTES),
                                            "payload_bytes": dict(PAYLOAD_BYTES)})
    register("faults.loss", loss)
