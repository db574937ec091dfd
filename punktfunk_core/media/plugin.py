"""Entry point of the builtin media stages (``punktfunk_core.media.plugin``).

Registers the protocol-neutral stages: capture sources, encoders, audio, and
the ``chunk``/``udp``/``null`` stages of the loopback diagnostic session.
Heavy or optional imports happen inside the factories, so a missing optional
library only disables its own stage.
"""

from __future__ import annotations

from typing import Any

from punktfunk_core import hookimpl
from punktfunk_core.stages import StreamSpec

#: encoder priorities: a usable GPU encoder is chosen before the CPU's
GPU_ENCODER, CPU_ENCODER = 100, 10


def _testpattern(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.testpattern import TestPattern
    return TestPattern(spec, options)


def _file(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.filecap import FileCapture
    return FileCapture(spec, options)


def _x11(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.x11 import X11Capture
    return X11Capture(spec, options)


def _x11_available(codec: str | None = None) -> str:
    from punktfunk_core.media.x11 import available
    return available()


def _encoder(cls_name: str):
    def factory(spec: StreamSpec, options: dict[str, Any]) -> Any:
        from punktfunk_core.media import swenc
        return getattr(swenc, cls_name)(spec, options)
    factory.__name__ = f"make_{cls_name}"
    return factory


def _codec_probe(codec_name: str):
    def available(codec: str | None = None) -> str:
        from punktfunk_core.media.swenc import codec_available
        return codec_available(codec_name)
    return available


def _nvenc(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.nvenc import NvencEncoder
    return NvencEncoder(spec, options)


def _nvenc_available(codec: str | None = None) -> str:
    from punktfunk_core.media.nvenc import available
    return available(codec or "h264")


def _tone(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.audio import ToneSource
    return ToneSource(spec, options)


def _opus(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.audio import OpusEncoder
    return OpusEncoder(spec, options)


def _chunk(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.chunk import ChunkPacketizer
    return ChunkPacketizer(spec, options)


def _udp(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.chunk import UdpSender
    return UdpSender(spec, options)


def _null(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.chunk import NullSender
    return NullSender(spec, options)


@hookimpl
def register_stages(registry: Any) -> None:
    registry.add("capture", "testpattern", _testpattern,
                 description="moving synthetic picture in I420/NV12 with a frame-id/time stamp")
    registry.add("capture", "file", _file, description="loops a video file through PyAV (option path)")
    registry.add("capture", "x11", _x11, available=_x11_available,
                 description="X11 screen capture through mss (optional extra)")
    # `stream.encoder = "auto"`: NVENC where a GPU can take the codec, else the codec's CPU encoder
    registry.add("encoder", "x264", _encoder("X264Encoder"), available=_codec_probe("libx264"),
                 codecs=("h264",), priority=CPU_ENCODER,
                 description="H.264 via PyAV libx264 (zerolatency, CBR-like, no B-frames)")
    registry.add("encoder", "hevc", _encoder("HevcEncoder"), available=_codec_probe("libx265"),
                 codecs=("hevc",), priority=CPU_ENCODER,
                 description="HEVC via PyAV libx265 (zerolatency, CBR-like, no B-frames)")
    registry.add("encoder", "av1", _encoder("Av1Encoder"), available=_codec_probe("libsvtav1"),
                 codecs=("av1",), priority=CPU_ENCODER,
                 description="AV1 via PyAV libsvtav1 (RTC low-delay, CBR)")
    registry.add("encoder", "nvenc", _nvenc, available=_nvenc_available,
                 codecs=("h264", "hevc", "av1"), priority=GPU_ENCODER,
                 description="H.264/HEVC/AV1 on NVIDIA NVENC via PyNvVideoCodec (ultra-low-latency, CBR)")
    registry.add("audio_source", "tone", _tone, description="phase-continuous sine, 48 kHz stereo s16")
    registry.add("audio_encoder", "opus", _opus, available=_codec_probe("libopus"),
                 description="Opus via PyAV libopus (low delay, 5 ms frames by default)")
    # the loopback session's packetizer and sender (priority: chosen when a session names none)
    registry.add("packetizer", "chunk", _chunk, priority=0,
                 description="splits access units into datagrams with a 9-byte header")
    registry.add("sender", "udp", _udp, priority=0, description="plain UDP datagrams to host:port")
    registry.add("sender", "null", _null, description="discards batches, counts bytes")
