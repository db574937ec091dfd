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

from punktfunk_core.settings import NOTE_KEY, REQUIRED, Settings, setting

#: stages.PIXEL_FORMATS
PixelFormat = Literal["i420", "nv12"]
#: Opus frame sizes at 48 kHz (2.5, 5, 10, 20, 40, 60 ms)
OPUS_FRAME_SAMPLES = (120, 240, 480, 960, 1920, 2880)
#: the same in milliseconds; 0 = use frame_samples
OPUS_FRAME_MS = (0, 2.5, 5, 10, 20, 40, 60)
AUDIO_SAMPLE_RATE = 48_000
#: channel counts a session can ask for: stereo, 5.1, 7.1
CHANNEL_COUNTS = (2, 6, 8)
#: libopus takes at most this many kbps a channel (FFmpeg refuses more)
OPUS_MAX_KBPS_PER_CHANNEL = 256
#: the PulseAudio source the desktop audio records: the monitor of whatever the default output is
DEFAULT_MONITOR = "@DEFAULT_MONITOR@"
#: the desktop audio source's ring holds this much audio; the backlog it keeps is at most half of it
DESKTOP_RING_MS = 500

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
    cursor: bool = setting(True, "draw the pointer into the picture")


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
def _channels(description: str = "2 (stereo), 6 (5.1) or 8 (7.1)") -> Any:
    return setting(2, description, enum=list(CHANNEL_COUNTS))


def _pulse_source() -> Any:
    return setting(DEFAULT_MONITOR, "PulseAudio source name (default: the monitor of the default output)",
                   minLength=1, pattern=r"^[^\x00\n]+$")


@dataclass(frozen=True, kw_only=True)
class ToneOptions(Settings):
    """Options of the tone audio source."""

    frequency: float = setting(440.0, "Hz", minimum=1, exclusiveMaximum=AUDIO_SAMPLE_RATE // 2)
    amplitude: float = setting(0.25, "of full scale", minimum=0, maximum=1)
    channels: int = _channels("2 (stereo), 6 (5.1) or 8 (7.1); every channel carries the tone")


@dataclass(frozen=True, kw_only=True)
class DesktopAudioOptions(Settings):
    """Options of the desktop audio source."""

    source: str = _pulse_source()
    channels: int = _channels()
    max_delay_ms: int = setting(20, "backlog kept before the oldest samples are dropped",
                                minimum=5, maximum=DESKTOP_RING_MS // 2)


@dataclass(frozen=True, kw_only=True)
class AutoAudioOptions(Settings):
    """Options of the auto audio source (desktop when a sound server answers, else tone)."""

    channels: int = _channels()
    source: str = _pulse_source()


def _bitrate_rules() -> tuple[dict[str, Any], ...]:
    """``bitrate_kbps``: 0 (the layout's) or 6 up to what libopus takes for the channel count."""
    at_least_6 = {"if": {"properties": {"bitrate_kbps": {"exclusiveMinimum": 0}}, "required": ["bitrate_kbps"]},
                  "then": {"properties": {"bitrate_kbps": {"minimum": 6}}}}
    per_channels = tuple(
        {"if": {"properties": {"channels": {"const": n}}, "required": ["channels"]},
         "then": {"properties": {"bitrate_kbps": {"maximum": OPUS_MAX_KBPS_PER_CHANNEL * n}}},
         NOTE_KEY: f"for {n} channels"}
        for n in CHANNEL_COUNTS)
    return (at_least_6, *per_channels)


@dataclass(frozen=True, kw_only=True)
class OpusOptions(Settings):
    """Options of the opus audio encoder."""

    schema_rules = _bitrate_rules()

    channels: int = _channels()
    high_quality: bool = setting(False, "GameStream's high-quality layout: a higher bitrate, and 5.1/7.1 code each "
                                        "channel on its own (OPUS_LAYOUTS)")
    frame_samples: int = setting(240, "samples per frame at 48 kHz (240 = 5 ms)", enum=list(OPUS_FRAME_SAMPLES))
    frame_ms: float = setting(0.0, "frame length in ms; wins over frame_samples when set", enum=list(OPUS_FRAME_MS))
    bitrate_kbps: int = setting(0, "CBR bitrate; 0 = the layout's (OPUS_LAYOUTS)",
                                minimum=0, maximum=OPUS_MAX_KBPS_PER_CHANNEL * max(CHANNEL_COUNTS))
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
