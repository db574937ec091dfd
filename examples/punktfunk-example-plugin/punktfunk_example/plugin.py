"""The ``bars`` capture source: moving vertical bars in I420 or NV12.

Its options and its config section are declared once each, as
:class:`punktfunk_core.settings.Settings` classes: that gives the JSON Schema
(``punktfunk config check`` holds ``stream.capture_options`` to it when
``stream.capture = "bars"``), the defaults and a typed view.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from punktfunk_core import hookimpl
from punktfunk_core.settings import Settings, setting
from punktfunk_core.stages import CaptureSource, Frame, StreamSpec

# (Y, U, V) of eight classic bars: white, yellow, cyan, green, magenta, red, blue, black
BARS_YUV = np.array(
    [(235, 128, 128), (210, 16, 146), (170, 166, 16), (145, 54, 34),
     (106, 202, 222), (81, 90, 240), (41, 240, 110), (16, 128, 128)],
    dtype=np.uint8,
)


@dataclass(frozen=True, kw_only=True)
class BarsOptions(Settings):
    """Options of the bars capture."""

    speed: int = setting(4, "pixels per frame the bars move", minimum=0, maximum=4096)
    pixel_format: Literal["i420", "nv12"] | None = setting(None, "default: the stream's")


@dataclass(frozen=True, kw_only=True)
class ExampleSettings(Settings):
    """The example plugin."""

    greeting: str = setting("hello", "logged when the host starts")


class BarsCapture(CaptureSource):
    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        opts = BarsOptions.take("bars", options)  # an unknown key or a bad value is a ValueError naming it
        self.speed = opts.speed
        self.format = opts.pixel_format or spec.pixel_format
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
        planes: tuple[np.ndarray, ...]
        if self.format == "i420":
            planes = (np.ascontiguousarray(y), np.ascontiguousarray(u), np.ascontiguousarray(v))
        else:
            uv = np.empty((h // 2, w), dtype=np.uint8)
            uv[:, 0::2] = u
            uv[:, 1::2] = v
            planes = (np.ascontiguousarray(y), uv)
        return Frame(planes, self.format, w, h, frame_id, time.monotonic_ns())


@hookimpl
def register_stages(registry: Any) -> None:
    registry.add("capture", "bars", BarsCapture, options_schema=BarsOptions.schema(),
                 description="moving colour bars (example plugin)")


@hookimpl
def config_schema(register: Any) -> None:
    register("example", ExampleSettings.schema())


@hookimpl
def host_started(host: Any) -> None:
    settings = ExampleSettings.of(host.config["example"])
    logging.getLogger("punktfunk.example").info("example plugin says %s", settings.greeting)
