"""The ``nvenc`` encoder: NVIDIA NVENC through PyNvVideoCodec (optional extra).

Set-up follows the PyNvVideoCodec programming guide: ``CreateEncoder(width,
height, format, usecpuinputbuffer, **options)`` with string-valued options,
``Encode(frame, pic_flags)`` returning the bitstream as bytes,
``GetEncodeReconfigureParams()`` / ``Reconfigure(params)`` for rate changes
without a new session, ``EndEncode()`` to flush.

Low-latency configuration: ``tuning_info=ultra_low_latency``, preset P1
(option), no B-frames (``bf=0``), CBR with ``maxbitrate`` = target and a VBV
of about one frame interval, SPS/PPS repeated on every IDR, keyframes only
every ``keyframe_interval`` frames or on request (``NV_ENC_PIC_FLAGS.FORCEIDR
| OUTPUT_SPSPPS`` on the next picture). Input is NV12 from host memory (an
I420 frame is converted once per frame, with a warning).

Encode returns bare bytes (no picture type), so the keyframe flag is read
from the bitstream (:mod:`bitstream`). The library may hold a few frames
before the first output (the Video Codec SDK's output delay); access units
are matched to frames first-in first-out, which is exact with no B-frames,
and ``output_delay`` records how many frames were in flight at most.
"""

from __future__ import annotations

import collections
import functools
import logging
import shutil
import subprocess
import threading
from typing import Any

import numpy as np

from punktfunk_core.media.bitstream import is_keyframe
from punktfunk_core.media.options import NvencOptions
from punktfunk_core.media.ratecontrol import PendingRequests
from punktfunk_core.media.swenc import ENDLESS_GOP, input_buffer
from punktfunk_core.stages import AccessUnit, Encoder, Frame, StreamSpec

log = logging.getLogger("punktfunk.media.nvenc")

#: our pixel format names → PyNvVideoCodec surface formats
NV_FORMAT = {"nv12": "NV12", "i420": "YUV420"}
#: NV_ENC_PIC_FLAGS values from nvEncodeAPI.h, used when the module lacks the enum
FORCEIDR = 0x2
OUTPUT_SPSPPS = 0x4


def _import_nvc() -> Any:
    import PyNvVideoCodec  # noqa: N813 - the library's own name

    return PyNvVideoCodec


@functools.lru_cache(maxsize=1)
def gpu_name(gpu: int = 0) -> str:
    """Name of NVIDIA GPU ``gpu`` from nvidia-smi, or "" when there is none."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ""
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return names[gpu] if gpu < len(names) else ""


@functools.lru_cache(maxsize=4)
def _probe(codec: str) -> str:
    try:
        nvc = _import_nvc()
    except ImportError:
        return "PyNvVideoCodec is not installed (pip install 'punktfunk[nvenc]')"
    except Exception as exc:  # noqa: BLE001 - a broken install (missing libcuda) lands here
        return f"PyNvVideoCodec cannot be loaded: {exc}"
    caps_fn = getattr(nvc, "GetEncoderCaps", None)
    try:
        if caps_fn is not None:
            caps = caps_fn(gpuid=0, codec=codec)
            if not caps:
                return f"the GPU has no NVENC {codec} encoder"
        else:  # older PyNvVideoCodec: open and close a tiny session
            nvc.CreateEncoder(256, 256, "NV12", True, codec=codec)
    except Exception as exc:  # noqa: BLE001 - the library raises plain RuntimeErrors
        name = gpu_name()
        where = f"on {name}" if name else "(no NVIDIA GPU found by nvidia-smi)"
        return f"NVENC {codec} is not usable {where}: {exc}"
    return ""


def available(codec: str = "h264") -> str:
    """"" when NVENC can encode ``codec`` here, else the reason it cannot."""
    return _probe(codec)


class NvencEncoder(PendingRequests, Encoder):
    """H.264/HEVC/AV1 on NVENC (codec from the stream spec).

    Options: :class:`punktfunk_core.media.options.NvencOptions`.
    """

    backend = "nvenc"
    input_format = "nv12"

    def __init__(self, spec: StreamSpec, options: dict[str, Any] | None = None) -> None:
        self.opts = NvencOptions.take("nvenc", options)
        reason = available(spec.codec)
        if reason:
            raise RuntimeError(f"nvenc encoder is not available: {reason}")
        self.nvc = _import_nvc()
        self.spec = spec
        self.codec = spec.codec
        self.input_format = self.opts.pixel_format
        self.gpu = gpu_name(self.opts.gpu) or f"NVIDIA GPU {self.opts.gpu}"
        self._kbps = int(spec.bitrate_kbps)
        if self._kbps <= 0:
            raise ValueError(f"nvenc: bitrate must be positive, not {self._kbps}")
        self._pending_kbps: int | None = None
        self._rate_lock = threading.Lock()
        self._force_key = False  # the first picture is an IDR anyway
        self._scratch: np.ndarray | None = None
        self._warned_format = False
        self._inflight: collections.deque[tuple[int, int]] = collections.deque()
        self._out: list[AccessUnit] = []
        self.output_delay = 0
        #: bitrate changes that needed a new session (Reconfigure refused)
        self.reopened = 0
        flags = getattr(self.nvc, "NV_ENC_PIC_FLAGS", None)
        self._idr_flags = (int(flags.FORCEIDR) | int(flags.OUTPUT_SPSPPS)) if flags is not None \
            else FORCEIDR | OUTPUT_SPSPPS
        self._enc = self._create(self._kbps)

    def _vbv_bits(self, kbps: int) -> int:
        return max(1000, int(kbps * 1000 * self.opts.vbv_frames / self.spec.fps))

    def _create(self, kbps: int) -> Any:
        gop = self.spec.keyframe_interval if self.spec.keyframe_interval > 0 else ENDLESS_GOP
        vbv = self._vbv_bits(kbps)
        config = {
            "gpu_id": self.opts.gpu, "codec": self.codec, "preset": self.opts.preset.upper(),
            "tuning_info": self.opts.tuning, "rc": "cbr", "fps": self.spec.fps,
            "bitrate": kbps * 1000, "maxbitrate": kbps * 1000, "vbvbufsize": vbv, "vbvinit": vbv,
            "bf": 0, "gop": gop, "idrperiod": gop, "repeatspspps": 1,
        }
        # the binding takes a map of strings
        return self.nvc.CreateEncoder(self.spec.width, self.spec.height, NV_FORMAT[self.input_format], True,
                                      **{k: str(v) for k, v in config.items()})

    # -- Encoder -------------------------------------------------------------------------
    def _apply_bitrate(self, kbps: int) -> None:
        if kbps == self._kbps:
            return
        params = self._enc.GetEncodeReconfigureParams()
        vbv = self._vbv_bits(kbps)
        for field, value in (("averageBitrate", kbps * 1000), ("maxBitRate", kbps * 1000),
                             ("vbvBufferSize", vbv), ("vbvInitialDelay", vbv)):
            if isinstance(params, dict):
                params[field] = value
            else:
                setattr(params, field, value)
        ok = self._enc.Reconfigure(params)
        if ok is False:  # the driver refused: new session, starting with an IDR
            log.warning("nvenc: Reconfigure refused %d kbps, opening a new session", kbps)
            self._flush()
            self._enc = self._create(kbps)
            self.reopened += 1
        self._kbps = kbps

    def submit(self, frame: Frame) -> None:
        if self._pending_kbps is not None:  # rare: take it under the lock set_bitrate uses
            with self._rate_lock:
                pending, self._pending_kbps = self._pending_kbps, None
            if pending is not None:
                self._apply_bitrate(pending)
        buf = input_buffer(self, frame).reshape(-1)
        self._inflight.append((frame.frame_id, frame.capture_ns))
        self.output_delay = max(self.output_delay, len(self._inflight) - 1)
        if self._force_key:
            self._force_key = False
            data = self._enc.Encode(buf, self._idr_flags)
        else:
            data = self._enc.Encode(buf)
        self._collect(data)

    def _collect(self, data: Any) -> None:
        if not data:
            return
        frame_id, capture_ns = self._inflight.popleft() if self._inflight else (-1, 0)
        data = bytes(data)
        self._out.append(AccessUnit(data, is_keyframe(self.codec, data), frame_id, capture_ns, self.codec))

    def receive(self) -> list[AccessUnit]:
        out, self._out = self._out, []
        return out

    def _flush(self) -> None:
        enc, self._enc = getattr(self, "_enc", None), None
        if enc is None:
            return
        try:
            self._collect(enc.EndEncode())
        except Exception:  # noqa: BLE001 - flushing a dying session must not mask the close
            log.debug("nvenc: EndEncode failed", exc_info=True)

    def close(self) -> None:
        self._flush()
        self._inflight.clear()
