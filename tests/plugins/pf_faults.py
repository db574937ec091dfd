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
  repairs it);
* sender ``drop-audio``: wraps ``inner`` likewise and drops the GameStream audio
  data packet (RTP payload type 97) whose sequence number % ``every`` == 1;
* packetizer ``gamestream-probe``: the ``gamestream`` packetizer with FEC
  blocks of at most ``block_data_shards`` data shards and the SHA-1 (16 hex
  digits) of the access units of frames ``hash_frames`` as sent.

IPC ``faults.status``: ``{"dropped": {stage: datagrams}, "frame_hashes": {frame index: sha1}}``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from punktfunk_core import hookimpl
from punktfunk_core.stages import PacketBatch, Sender, StreamSpec

#: written by the session threads, read by the IPC command (ints and dict items: atomic)
DROPPED: dict[str, int] = {}
FRAME_HASHES: dict[str, str] = {}


class WrappedSender(Sender):
    """Hands batches on to another sender, after ``keep(batch)`` chose the datagrams."""

    label = ""

    def __init__(self, registry: Any, spec: StreamSpec, options: dict[str, Any], own: tuple[str, ...]) -> None:
        inner_options = {k: v for k, v in options.items() if k not in (*own, "inner")}
        self.inner = registry.create("sender", str(options.get("inner", "gamestream")), spec, inner_options)
        self.waits = self.inner.waits
        DROPPED.setdefault(self.label, 0)

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
        kept = self.keep(batch)
        if kept is not None:
            DROPPED[self.label] += len(batch.packets) - len(kept)
            batch.packets = kept
            batch.datagram_size = 0  # a gap: no longer one run of equal datagrams
        self.inner.send(batch)

    def close(self) -> None:
        self.inner.close()


class DropPackets(WrappedSender):
    label = "drop-packets"

    def __init__(self, registry: Any, spec: StreamSpec, options: dict[str, Any]) -> None:
        super().__init__(registry, spec, options, ("all_but_first_of", "second_of"))
        self.all_but_first = {int(x) for x in options.get("all_but_first_of", [])}
        self.second = {int(x) for x in options.get("second_of", [])}

    def keep(self, batch: PacketBatch) -> list[Any] | None:
        frame = batch.meta.get("frame_index")
        packets = batch.packets
        if frame in self.all_but_first:
            return [packets[0]]
        if frame in self.second and len(packets) > 2:
            return [packets[0], *packets[2:]]
        return None


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
    register("faults.status", lambda _args: {"dropped": dict(DROPPED), "frame_hashes": dict(FRAME_HASHES)})
