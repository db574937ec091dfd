"""punktfunk/1 audio: ``audio_source`` → ``opus`` (48 kHz; stereo, 5.1 or 7.1; 5 ms) → the session's datapath.

Audio rides the video's encrypted UDP flow (same socket, same host→client
key): each Opus packet is one access unit of packet type ``PKT_AUDIO``,
sealed with the nonce direction ``DIR_AUDIO_HOST_TO_CLIENT`` so its sequence
numbers (counted apart from the video's) never repeat a video nonce. FEC
keeps the session's ``fec_percent``/``fec_min_parity``, but an Opus packet is
never split: one data shard and its parity shards (with one data shard,
Reed–Solomon parity is a copy), so any ``m`` of the ``1 + m`` datagrams may be
lost. Layout and wire: docs/protocol-native.md, "Audio"; sources: docs/audio.md.
"""

from __future__ import annotations

import socket
from typing import Any

from punktfunk_core.media.audio import OPUS_LAYOUTS, SAMPLE_RATE, OpusLayout
from punktfunk_core.pipeline import close_quietly
from punktfunk_core.stages import Stage, StreamSpec

from punktfunk_native.datapath import FecParams, NativePacketizer, NativeSender
from punktfunk_native.wire import DIR_AUDIO_HOST_TO_CLIENT, PKT_AUDIO

#: the channel counts a client may ask for (stereo, 5.1, 7.1)
AUDIO_CHANNELS = (2, 6, 8)
#: Opus frame length: the latency of the audio path is one frame plus the network
AUDIO_FRAME_MS = 5


def audio_layout(channels: int) -> OpusLayout:
    """The Opus multistream layout the host codes ``channels`` in (normal quality)."""
    return OPUS_LAYOUTS[(channels, False)]


def layout_message(layout: OpusLayout) -> dict[str, Any]:
    """What ``session_accept.audio`` tells the client: enough to create its Opus decoder."""
    return {"codec": "opus", "sample_rate": SAMPLE_RATE, "channels": layout.channels, "streams": layout.streams,
            "coupled": layout.coupled, "mapping": list(layout.mapping), "frame_ms": AUDIO_FRAME_MS,
            "bitrate_kbps": layout.bitrate_kbps}


def audio_fec(video: FecParams) -> FecParams:
    """The video's parity settings, one data shard per Opus packet."""
    return FecParams(video.fec_percent, video.min_parity, video.max_shard, 1, video.max_shard)


def audio_stages(stages: Any, config: dict[str, Any], spec: StreamSpec, channels: int, key: bytes, fec: FecParams,
                 sock: socket.socket, peer: tuple[Any, ...]) -> tuple[Stage, ...]:
    """Source, encoder, packetizer and sender of a session's audio (the source named by
    ``native.audio_source``); on failure the stages made so far are closed."""
    made: list[Stage] = []
    try:
        made.append(stages.create("audio_source", config.get("audio_source", "auto"), spec, {"channels": channels}))
        enc = stages.create("audio_encoder", "opus", spec, {"frame_samples": SAMPLE_RATE * AUDIO_FRAME_MS // 1000,
                                                            "channels": channels})
        made.append(enc)
        want, got = audio_layout(channels), getattr(enc, "layout", None)
        if got is not None and (got.streams, got.coupled, got.mapping) != (want.streams, want.coupled, want.mapping):
            raise RuntimeError(f"opus: the encoder codes {got}, not the announced {want}")
        made.append(NativePacketizer(key, audio_fec(fec), DIR_AUDIO_HOST_TO_CLIENT, packet_type=PKT_AUDIO))
        # unpaced (the audio clock is the pace), no GSO (one to three small datagrams), and the
        # socket stays the video sender's to close
        made.append(NativeSender(sock, peer, 1000 // AUDIO_FRAME_MS, gso=False, pace_percent=0, close_socket=False))
    except BaseException:
        for stage in made:
            close_quietly(stage)  # the creation error is the one to report
        raise
    return tuple(made)
