"""CPU video encoders through PyAV: ``x264`` (libx264), ``hevc`` (libx265), ``av1`` (libsvtav1).

All three share :class:`PyAVEncoder`: low-latency settings (no B-frames, no
lookahead), CBR-like rate control (target = max rate, a VBV of about one frame
interval), keyframes only every ``keyframe_interval`` frames or on request,
and Annex-B / in-band parameter sets (or sequence headers) on every keyframe
so a receiver can start at any keyframe.

Frames arrive as views into one contiguous 4:2:0 buffer (see :mod:`yuv`) and
reach the codec through ``VideoFrame.from_numpy_buffer`` without a copy; the
codec copies the picture into its own pool during ``encode``.

``request_keyframe`` and ``set_bitrate`` may be called from any thread; they
only set a flag that the encode thread applies on the next ``submit``.
libx264 lowers its rate in place (libavcodec reconfigures x264 when the
context's ``bit_rate`` changes) but cannot raise it above the VBV max rate set
at open, which PyAV cannot change later; a raise, and any change on the other
codecs, rebuilds the codec context and starts the new one with an IDR.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.codeccontext import VideoCodecContext

from punktfunk_core.media.options import Av1Options, HevcOptions, PyAVEncoderOptions, X264Options
from punktfunk_core.media.ratecontrol import PendingRequests
from punktfunk_core.media.yuv import AV_FORMAT, alloc_planes, convert_into, packed_view
from punktfunk_core.stages import AccessUnit, Encoder, Frame, StreamSpec

log = logging.getLogger("punktfunk.media.encoder")

#: GOP length used when keyframes should come only on request
ENDLESS_GOP = 1 << 30
_PICT_I = av.video.frame.PictureType.I
_PICT_NONE = av.video.frame.PictureType.NONE


def codec_available(codec_name: str) -> str:
    """"" when PyAV can open ``codec_name`` for encoding, else the reason."""
    try:
        av.codec.Codec(codec_name, "w")
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable here"
        return f"PyAV/FFmpeg has no {codec_name} encoder ({exc})"
    return ""


def _params(value: str | Mapping[str, Any]) -> str:
    if isinstance(value, Mapping):  # {"key": value} is friendlier in TOML
        return ":".join(f"{k}={v}" for k, v in value.items())
    return value


def input_buffer(enc: Any, frame: Frame) -> np.ndarray:
    """The (h*3/2, w) buffer in ``enc.input_format`` holding ``frame``: the
    frame's own buffer when its planes are packed and in that format (zero
    copy), else a copy/conversion into ``enc._scratch`` (logged once)."""
    if (frame.width, frame.height) != (enc.spec.width, enc.spec.height):
        raise ValueError(f"{enc.backend}: got a {frame.width}x{frame.height} frame, the encoder was opened "
                         f"for {enc.spec.width}x{enc.spec.height}")
    if frame.format == enc.input_format:
        buf = packed_view(frame)
        if buf is not None:
            return buf
    elif not enc._warned_format:
        enc._warned_format = True
        log.warning("%s: capture delivers %s, the encoder wants %s: converting every frame "
                    "(set the capture's pixel_format to %s)", enc.backend, frame.format,
                    enc.input_format, enc.input_format)
    if enc._scratch is None:
        enc._scratch = alloc_planes(frame.width, frame.height, enc.input_format)[0]
    return convert_into(frame, enc.input_format, enc._scratch)


class PyAVEncoder(PendingRequests, Encoder):
    """Base of the PyAV encoders; subclasses fill in the codec specifics.

    Options: :class:`punktfunk_core.media.options.PyAVEncoderOptions` and the
    subclass's own (``options_class``).
    """

    #: FFmpeg encoder name
    codec_name = ""
    #: stage name / backend reported in captures
    backend = ""
    #: codec of the produced access units
    codec = "h264"
    #: name of the private option taking ``key=value:…`` codec parameters
    params_option = ""
    #: can this libavcodec wrapper change the bitrate of an open context?
    live_bitrate = False
    #: the options this encoder takes
    options_class: type[PyAVEncoderOptions] = PyAVEncoderOptions

    def __init__(self, spec: StreamSpec, options: dict[str, Any] | None = None) -> None:
        self.opts = self.options_class.take(self.backend, options)
        self._params = _params(self.opts.params)
        if spec.codec != self.codec:
            log.warning("%s encoder produces %s but the stream spec says %s", self.backend, self.codec, spec.codec)
        self.spec = spec
        self.input_format = self.opts.pixel_format or spec.pixel_format
        self._kbps = int(spec.bitrate_kbps)
        if self._kbps <= 0:
            raise ValueError(f"{self.backend}: bitrate must be positive, not {self._kbps}")
        self._pending_kbps: int | None = None
        self._rate_lock = threading.Lock()
        self._force_key = True  # the first picture is a keyframe anyway; say so
        self._pts = 0
        self._out: list[AccessUnit] = []
        self._inflight: dict[int, tuple[int, int]] = {}
        self._scratch: np.ndarray | None = None
        self._warned_format = False
        #: how often a bitrate change had to reopen the codec (each starts with an IDR)
        self.reopened = 0
        self._cap_kbps = self._kbps
        self._ctx: Any = self._open(self._kbps)

    # -- codec context ----------------------------------------------------------------
    def _gop(self) -> int:
        return self.spec.keyframe_interval if self.spec.keyframe_interval > 0 else ENDLESS_GOP

    def _bufsize_bits(self, kbps: int) -> int:
        return max(1000, int(kbps * 1000 * self.opts.vbv_frames / self.spec.fps))

    def _codec_options(self, kbps: int) -> dict[str, str]:
        """Private/generic AVOptions for avcodec_open2 (subclass adds its own)."""
        return {"bufsize": str(self._bufsize_bits(kbps)), "maxrate": str(kbps * 1000)}

    def _open(self, kbps: int) -> Any:
        self._cap_kbps = kbps
        ctx = av.CodecContext.create(self.codec_name, "w")
        assert isinstance(ctx, VideoCodecContext)
        ctx.width = self.spec.width
        ctx.height = self.spec.height
        ctx.pix_fmt = AV_FORMAT[self.input_format]
        ctx.time_base = Fraction(1, self.spec.fps)
        ctx.framerate = Fraction(self.spec.fps, 1)
        ctx.bit_rate = kbps * 1000
        ctx.gop_size = self._gop()
        ctx.max_b_frames = 0
        if self.opts.threads:
            ctx.thread_count = self.opts.threads
        opts = self._codec_options(kbps)
        if self._params:
            key = self.params_option
            opts[key] = f"{opts[key]}:{self._params}" if opts.get(key) else self._params
        ctx.options = opts
        try:
            ctx.open()
        except av.error.FFmpegError as exc:
            raise ValueError(f"{self.backend}: {self.codec_name} refused its settings (check the options "
                             f"'preset' and 'params'): {exc}") from None
        return ctx

    # -- Encoder ----------------------------------------------------------------------------
    def _apply_bitrate(self, kbps: int) -> None:
        if kbps == self._kbps:
            return
        if self.live_bitrate and kbps <= self._cap_kbps:
            # libavcodec hands the new target to the codec on the next frame;
            # the VBV cap set at open stays, so only rates up to it go live
            self._ctx.bit_rate = kbps * 1000
        else:
            self._drain_and_close()
            self._ctx = self._open(kbps)
            self._force_key = True
            self.reopened += 1
        self._kbps = kbps

    def _av_frame(self, frame: Frame) -> Any:
        return av.VideoFrame.from_numpy_buffer(input_buffer(self, frame), format=AV_FORMAT[self.input_format])

    def submit(self, frame: Frame) -> None:
        if self._pending_kbps is not None:  # rare: take it under the lock set_bitrate uses
            with self._rate_lock:
                pending, self._pending_kbps = self._pending_kbps, None
            if pending is not None:
                self._apply_bitrate(pending)
        vf = self._av_frame(frame)
        pts = self._pts
        self._pts += 1
        vf.pts = pts
        if self._force_key:
            self._force_key = False
            vf.pict_type = _PICT_I
        self._inflight[pts] = (frame.frame_id, frame.capture_ns)
        self._collect(self._ctx.encode(vf))

    def _collect(self, packets: list[Any]) -> None:
        for pkt in packets:
            meta = self._inflight.pop(pkt.pts, None) if pkt.pts is not None else None
            if meta is None:  # the codec lost the pts: attribute it to the oldest frame in flight
                oldest = min(self._inflight) if self._inflight else None
                meta = self._inflight.pop(oldest) if oldest is not None else (-1, 0)
            self._out.append(AccessUnit(bytes(pkt), bool(pkt.is_keyframe), meta[0], meta[1], self.codec))

    def receive(self) -> list[AccessUnit]:
        out, self._out = self._out, []
        return out

    def _drain_and_close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        try:
            self._collect(ctx.encode(None))
        except Exception:  # noqa: BLE001 - a codec that cannot flush loses nothing we need
            log.debug("%s: flush failed", self.backend, exc_info=True)
        try:
            ctx.close()
        except AttributeError:  # older PyAV: released on garbage collection
            pass

    def close(self) -> None:
        self._drain_and_close()
        self._inflight.clear()


class X264Encoder(PyAVEncoder):
    """H.264 through libx264: zerolatency tune, no B-frames, CBR-like VBV.

    Options: :class:`punktfunk_core.media.options.X264Options`.
    """

    codec_name = "libx264"
    backend = "x264"
    codec = "h264"
    params_option = "x264-params"
    live_bitrate = True
    options_class = X264Options
    opts: X264Options

    def _codec_options(self, kbps: int) -> dict[str, str]:
        opts = super()._codec_options(kbps)
        opts.update({
            "preset": str(self.opts.preset),
            "forced-idr": "1",
            # no scene-cut I-frames: keyframes come from the GOP or a request
            "x264-params": "scenecut=0:bframes=0:rc-lookahead=0:sync-lookahead=0",
        })
        if self.opts.tune:
            opts["tune"] = self.opts.tune
        return opts


class HevcEncoder(PyAVEncoder):
    """HEVC through libx265: zerolatency tune, no B-frames, CBR-like VBV,
    in-band VPS/SPS/PPS on every keyframe. Bitrate changes reopen the codec
    (libavcodec cannot reconfigure x265) and start with an IDR."""

    codec_name = "libx265"
    backend = "hevc"
    codec = "hevc"
    params_option = "x265-params"
    options_class = HevcOptions
    opts: HevcOptions

    def _codec_options(self, kbps: int) -> dict[str, str]:
        gop = self._gop()
        params = [
            "log-level=error", "bframes=0", "rc-lookahead=0", "scenecut=0", "repeat-headers=1",
            f"keyint={gop if gop < ENDLESS_GOP else -1}", "min-keyint=1", "open-gop=0",
            f"vbv-maxrate={kbps}", f"vbv-bufsize={max(1, self._bufsize_bits(kbps) // 1000)}",
        ]
        opts = {"preset": str(self.opts.preset), "forced-idr": "1", "x265-params": ":".join(params)}
        if self.opts.tune:
            opts["tune"] = self.opts.tune
        return opts


class Av1Encoder(PyAVEncoder):
    """AV1 through libsvtav1: RTC mode, flat low-delay prediction structure,
    CBR. Output is one temporal unit of OBUs per frame with the sequence
    header on keyframes. Bitrate changes reopen the codec with a keyframe.

    Default preset 10 (about 7 ms/frame at 360p, 10 ms at 720p here). At
    presets ≥ 9 SVT-AV1 now and then keeps a stale 8-16 px block from the
    previous frame (the frame stamp catches it and reads None); preset 8 does
    not but is about 3× slower.
    """

    codec_name = "libsvtav1"
    backend = "av1"
    codec = "av1"
    params_option = "svtav1-params"
    options_class = Av1Options

    def _open(self, kbps: int) -> Any:
        # SVT-AV1 prints its whole configuration at info level on every open
        os.environ.setdefault("SVT_LOG", "1")
        return super()._open(kbps)

    def _codec_options(self, kbps: int) -> dict[str, str]:
        gop = self._gop()
        # SVT-AV1 takes its VBV in milliseconds, at least 20
        buf_ms = max(20, round(1000 * self._bufsize_bits(kbps) / (kbps * 1000)))
        # flat low-delay structure (no temporal layers): every frame is coded alike
        params = ["rtc=1", "pred-struct=1", "hierarchical-levels=0", "rc=2", "lookahead=0", "enable-overlays=0",
                  "scd=0",
                  f"tbr={kbps}", f"buf-sz={buf_ms}", f"buf-initial-sz={buf_ms}", f"buf-optimal-sz={buf_ms}",
                  f"keyint={gop if gop < ENDLESS_GOP else -1}"]
        opts: dict[str, str] = {}
        opts.update({"preset": str(self.opts.preset), "svtav1-params": ":".join(params)})
        return opts
