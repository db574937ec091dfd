"""Entry point of the builtin media stages (``punktfunk_core.media.plugin``).

Registers the protocol-neutral stages: capture sources, encoders, audio, and
the ``chunk``/``udp``/``null`` stages of the loopback diagnostic session.
Heavy or optional imports happen inside the factories, so a missing optional
library only disables its own stage; each stage's options schema comes from
the light ``media/options.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from punktfunk_core import hookimpl
from punktfunk_core.media import options as o
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


def _encoder(cls_name: str) -> Callable[[StreamSpec, dict[str, Any]], Any]:
    def factory(spec: StreamSpec, options: dict[str, Any]) -> Any:
        from punktfunk_core.media import swenc
        return getattr(swenc, cls_name)(spec, options)
    factory.__name__ = f"make_{cls_name}"
    return factory


def _codec_probe(codec_name: str) -> Callable[[str | None], str]:
    def available(codec: str | None = None) -> str:
        from punktfunk_core.media.swenc import codec_available
        return codec_available(codec_name)
    return available


def _libopus_available(codec: str | None = None) -> str:
    from punktfunk_core.media.libopus import missing
    return missing()


def _nvenc(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.nvenc import NvencEncoder
    return NvencEncoder(spec, options)


def _nvenc_available(codec: str | None = None) -> str:
    from punktfunk_core.media.nvenc import available
    return available(codec or "h264")


def _tone(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.audio import ToneSource
    return ToneSource(spec, options)


def _desktop_audio(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.desktop_audio import DesktopAudioSource
    return DesktopAudioSource(spec, options)


def _desktop_audio_available(codec: str | None = None) -> str:
    from punktfunk_core.media.desktop_audio import available
    return available()


def _auto_audio(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_core.media.desktop_audio import make_auto
    return make_auto(spec, options)


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
    registry.add("capture", "testpattern", _testpattern, options_schema=o.TestPatternOptions.schema(),
                 description="moving synthetic picture in I420/NV12 with a frame-id/time stamp")
    registry.add("capture", "file", _file, options_schema=o.FileOptions.schema(),
                 description="loops a video file through PyAV (option path)")
    registry.add("capture", "x11", _x11, available=_x11_available, options_schema=o.X11Options.schema(),
                 description="X11 screen capture through mss (optional extra)")
    # `stream.encoder = "auto"`: NVENC where a GPU can take the codec, else the codec's CPU encoder
    registry.add("encoder", "x264", _encoder("X264Encoder"), available=_codec_probe("libx264"),
                 options_schema=o.X264Options.schema(), codecs=("h264",), priority=CPU_ENCODER,
                 description="H.264 via PyAV libx264 (zerolatency, CBR-like, no B-frames)")
    registry.add("encoder", "hevc", _encoder("HevcEncoder"), available=_codec_probe("libx265"),
                 options_schema=o.HevcOptions.schema(), codecs=("hevc",), priority=CPU_ENCODER,
                 description="HEVC via PyAV libx265 (zerolatency, CBR-like, no B-frames)")
    registry.add("encoder", "av1", _encoder("Av1Encoder"), available=_codec_probe("libsvtav1"),
                 options_schema=o.Av1Options.schema(), codecs=("av1",), priority=CPU_ENCODER,
                 description="AV1 via PyAV libsvtav1 (RTC low-delay, CBR)")
    registry.add("encoder", "nvenc", _nvenc, available=_nvenc_available, options_schema=o.NvencOptions.schema(),
                 codecs=("h264", "hevc", "av1"), priority=GPU_ENCODER,
                 description="H.264/HEVC/AV1 on NVIDIA NVENC via PyNvVideoCodec (ultra-low-latency, CBR)")
    registry.add("audio_source", "tone", _tone, options_schema=o.ToneOptions.schema(),
                 description="phase-continuous sine, 48 kHz s16, 2/6/8 channels")
    registry.add("audio_source", "desktop", _desktop_audio, available=_desktop_audio_available,
                 options_schema=o.DesktopAudioOptions.schema(),
                 description="what the desktop plays: the default output's monitor of PulseAudio/PipeWire (parec)")
    registry.add("audio_source", "auto", _auto_audio, options_schema=o.AutoAudioOptions.schema(),
                 description="desktop when a sound server answers, else tone (one log line says which)")
    registry.add("audio_encoder", "opus", _opus, available=_libopus_available,
                 options_schema=o.OpusOptions.schema(),
                 description="Opus via libopus (ctypes; restricted low delay, 5 ms frames; stereo, 5.1, 7.1 "
                             "multistream)")
    # the loopback session's packetizer and sender (priority: chosen when a session names none)
    registry.add("packetizer", "chunk", _chunk, options_schema=o.ChunkOptions.schema(), priority=0,
                 description="splits access units into datagrams with a 9-byte header")
    registry.add("sender", "udp", _udp, options_schema=o.UdpOptions.schema(), priority=0,
                 description="plain UDP datagrams to host:port")
    registry.add("sender", "null", _null, options_schema=o.NoOptions.schema(),
                 description="discards batches, counts bytes")


@hookimpl
def doctor_findings(config: dict[str, Any], register: Callable[..., None]) -> None:
    from punktfunk_core.media import doctor

    for finding in doctor.findings(config):
        register(finding)
