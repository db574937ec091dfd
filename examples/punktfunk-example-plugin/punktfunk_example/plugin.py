"""The ``bars`` capture source: moving vertical bars in I420 or NV12."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from punktfunk_core import hookimpl
from punktfunk_core.stages import CaptureSource, Frame, StreamSpec

# (Y, U, V) of eight classic bars: white, yellow, cyan, green, magenta, red, blue, black
BARS_YUV = np.array(
    [(235, 128, 128), (210, 16, 146), (170, 166, 16), (145, 54, 34),
     (106, 202, 222), (81, 90, 240), (41, 240, 110), (16, 128, 128)],
    dtype=np.uint8,
)


class BarsCapture(CaptureSource):
    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        unknown = set(options) - {"speed", "pixel_format"}
        if unknown:
            raise ValueError(f"bars: unknown option(s) {', '.join(sorted(unknown))} (known: speed, pixel_format)")
        self.speed = int(options.get("speed", 4))
        self.format = options.get("pixel_format", spec.pixel_format)
        if self.format not in ("i420", "nv12"):
            raise ValueError(f"bars: pixel_format must be i420 or nv12, not {self.format!r}")
        w, h = spec.width, spec.height
        self.width, self.height = w, h
        # One row of each plane, twice as wide so that a moving window never wraps.
        idx = (np.arange(2 * w) * 8 // w) % 8
        self._y_row = BARS_YUV[idx, 0]
        self._u_row = BARS_YUV[idx[::2], 1]
        self._v_row = BARS_YUV[idx[::2], 2]

    def grab(self, frame_id: int) -> Frame:
        w, h = self.width, self.height
        off = (frame_id * self.speed) % w
        y = np.broadcast_to(self._y_row[off:off + w], (h, w))
        cu = off // 2
        u = np.broadcast_to(self._u_row[cu:cu + w // 2], (h // 2, w // 2))
        v = np.broadcast_to(self._v_row[cu:cu + w // 2], (h // 2, w // 2))
        if self.format == "i420":
            planes = (np.ascontiguousarray(y), np.ascontiguousarray(u), np.ascontiguousarray(v))
        else:
            uv = np.empty((h // 2, w), dtype=np.uint8)
            uv[:, 0::2] = u
            uv[:, 1::2] = v
            planes = (np.ascontiguousarray(y), uv)
        return Frame(planes, self.format, w, h, frame_id, time.monotonic_ns())


@hookimpl
def register_stages(registry):
    registry.add("capture", "bars", BarsCapture, description="moving colour bars (example plugin)")


@hookimpl
def config_schema(register):
    register("example", {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "greeting": {"type": "string", "default": "hello", "description": "logged when the host starts"},
        },
    })


@hookimpl
def host_started(host):
    import logging

    logging.getLogger("punktfunk.example").info("example plugin says %s", host.config["example"]["greeting"])
