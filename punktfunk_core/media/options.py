"""The options each builtin media stage takes, declared once (see :mod:`punktfunk_core.settings`).

The plugin registers each class's schema with its stage, so ``punktfunk config
check`` knows them; each stage reads its options with ``XOptions.take(name,
options)``, which checks them (an unknown key names the known ones, a bad
value names its key) and returns them typed, defaults filled in. This module
imports nothing heavy: registering a stage must not load its libraries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from punktfunk_core.settings import REQUIRED, Settings, setting

#: stages.PIXEL_FORMATS
PixelFormat = Literal["i420", "nv12"]
#: Opus frame sizes at 48 kHz (2.5, 5, 10, 20, 40, 60 ms)
OPUS_FRAME_SAMPLES = (120, 240, 480, 960, 1920, 2880)
#: the same in milliseconds; 0 = use frame_samples
OPUS_FRAME_MS = (0, 2.5, 5, 10, 20, 40, 60)
AUDIO_SAMPLE_RATE = 48_000

_STREAM_FORMAT = "input pixel format (default: the stream's)"


# -- capture ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TestPatternOptions(Settings):
    """Options of the testpattern capture."""

    __test__ = False  # not a pytest class despite the name

    pixel_format: PixelFormat | None = setting(None, _STREAM_FORMAT)
    speed: int = setting(4, "pixels per frame the pattern moves (even: chroma moves by whole samples)",
                         minimum=0, maximum=1 << 16)


@dataclass(frozen=True, kw_only=True)
class FileOptions(Settings):
    """Options of the file capture."""

    path: str = setting(REQUIRED, "the video file to loop", minLength=1)
    loop: bool = setting(True, "start again at the end (else repeat the last picture)")
    stamp: bool = setting(True, "draw the frame-id/time stamp on each picture")
    pixel_format: PixelFormat | None = setting(None, _STREAM_FORMAT)


@dataclass(frozen=True, kw_only=True)
class X11Options(Settings):
    """Options of the x11 capture."""

    display: str = setting("", "X11 display (default: $DISPLAY)")
    monitor: int = setting(1, "mss monitor index: 0 = all monitors, 1 = the first", minimum=0, maximum=64)
    pixel_format: PixelFormat | None = setting(None, _STREAM_FORMAT)
    converter: Literal["auto", "libyuv", "swscale"] = setting(
        "auto", "BGRA → 4:2:0 conversion: auto = libyuv when it can, else swscale")


# -- video encoders --------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PyAVEncoderOptions(Settings):
    """Options of the PyAV encoders."""

    preset: str | int = setting("", "the codec's speed/quality preset")
    threads: int = setting(0, "encoder threads; 0 = the codec's choice", minimum=0, maximum=256)
    vbv_frames: float = setting(1.0, "VBV buffer in frame intervals", minimum=0.1, maximum=1000)
    pixel_format: PixelFormat | None = setting(None, _STREAM_FORMAT)
    params: str | Mapping[str, Any] = setting("", "extra codec parameters, 'key=value:key=value' or a table "
                                                  "(appended last)")


@dataclass(frozen=True, kw_only=True)
class X264Options(PyAVEncoderOptions):
    """Options of the x264 encoder (libx264)."""

    preset: str | int = setting("ultrafast", "libx264 preset")
    tune: str = setting("zerolatency", "libx264 tune; empty = none")


@dataclass(frozen=True, kw_only=True)
class HevcOptions(PyAVEncoderOptions):
    """Options of the hevc encoder (libx265)."""

    preset: str | int = setting("ultrafast", "libx265 preset")
    tune: str = setting("zerolatency", "libx265 tune; empty = none")


@dataclass(frozen=True, kw_only=True)
class Av1Options(PyAVEncoderOptions):
    """Options of the av1 encoder (libsvtav1)."""

    preset: str | int = setting("10", "SVT-AV1 preset (0 slowest … 13 fastest)")


@dataclass(frozen=True, kw_only=True)
class NvencOptions(Settings):
    """Options of the nvenc encoder."""

    preset: str = setting("P1", "NVENC preset P1 (fastest) … P7", pattern="^[Pp][1-7]$")
    tuning: Literal["ultra_low_latency", "low_latency", "high_quality"] = setting("ultra_low_latency")
    gpu: int = setting(0, "CUDA device index", minimum=0, maximum=63)
    vbv_frames: float = setting(1.0, "VBV buffer in frame intervals", minimum=0.1, maximum=1000)
    pixel_format: PixelFormat = setting("nv12", "input pixel format")


# -- audio -------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ToneOptions(Settings):
    """Options of the tone audio source."""

    frequency: float = setting(440.0, "Hz", minimum=1, exclusiveMaximum=AUDIO_SAMPLE_RATE // 2)
    amplitude: float = setting(0.25, "of full scale", minimum=0, maximum=1)


@dataclass(frozen=True, kw_only=True)
class OpusOptions(Settings):
    """Options of the opus audio encoder."""

    frame_samples: int = setting(240, "samples per frame at 48 kHz (240 = 5 ms)", enum=list(OPUS_FRAME_SAMPLES))
    frame_ms: float = setting(0.0, "frame length in ms; wins over frame_samples when set", enum=list(OPUS_FRAME_MS))
    bitrate_kbps: int = setting(128, minimum=6, maximum=510)
    application: Literal["lowdelay", "audio", "voip"] = setting("lowdelay")


# -- loopback stages ---------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ChunkOptions(Settings):
    """Options of the chunk packetizer."""

    payload_size: int = setting(1200, "largest datagram payload in bytes (plus a 9-byte header)",
                                minimum=16, maximum=65_000)


@dataclass(frozen=True, kw_only=True)
class UdpOptions(Settings):
    """Options of the udp sender."""

    host: str = setting("127.0.0.1", "where the datagrams go")
    port: int = setting(REQUIRED, minimum=1, maximum=65535)
    sndbuf: int = setting(0, "SO_SNDBUF in bytes; 0 = the system's", minimum=0, maximum=1 << 30)


@dataclass(frozen=True, kw_only=True)
class NoOptions(Settings):
    """A stage without options."""
