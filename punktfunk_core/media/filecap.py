"""The ``file`` capture source: replays a video file, looping, through PyAV.

Every decoded picture is scaled/converted by PyAV's ``reformat`` (swscale) to
the stream's size and the encoder's input format, copied into a reused 4:2:0
buffer and (by default) stamped with the frame id and capture time like the
test pattern, so end-to-end latency can be measured on real content.

Uncompressed YUV4MPEG2 (``.y4m``) files whose size and 4:2:0 layout already
match the stream take a shorter road: each picture is read straight into the
buffer the encoder gets (one ``readinto``, no decoder, no copy in user space),
as GStreamer's ``filesrc ! rawvideoparse`` does. Anything else goes through
PyAV.

The source paces nothing: the runner calls ``grab`` on its own clock and gets
the file's next picture. Packets that fail to decode are counted in
``decode_errors`` and skipped; a file that stops producing pictures is
reopened from the start (``loop``, default true) or its last picture is
repeated with ``is_repeat=True``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import av
import numpy as np

from punktfunk_core.media import stamp
from punktfunk_core.media.options import FileOptions
from punktfunk_core.media.yuv import AV_FORMAT, alloc_planes, copy_av_frame
from punktfunk_core.stages import CaptureSource, Frame, StreamSpec

log = logging.getLogger("punktfunk.media.file")

RING = 3
#: consecutive bad packets after which the file is treated as ended
MAX_BAD_RUN = 50


#: YUV4MPEG2 colour spaces that are 8-bit 4:2:0 planar (the chroma siting differs, the bytes do not)
Y4M_420 = {b"420", b"420jpeg", b"420paldv", b"420mpeg2"}


class Y4MReader:
    """Reads the pictures of an 8-bit 4:2:0 YUV4MPEG2 file straight into caller buffers."""

    def __init__(self, path: str, width: int, height: int, header: bytes) -> None:
        self.frame_bytes = width * height * 3 // 2
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._f.seek(len(header))
        self._first = len(header)

    @staticmethod
    def probe(path: str, width: int, height: int) -> bytes | None:
        """The header line when ``path`` is a Y4M file of exactly this size in 8-bit
        4:2:0 progressive, else None (the caller then uses PyAV)."""
        try:
            with open(path, "rb") as f:
                header = f.readline(1024)
        except OSError:
            return None
        if not header.startswith(b"YUV4MPEG2 ") or not header.endswith(b"\n"):
            return None
        fields = {t[:1]: t[1:] for t in header.split()[1:] if t}
        if fields.get(b"W") != str(width).encode() or fields.get(b"H") != str(height).encode():
            return None
        if fields.get(b"C", b"420jpeg") not in Y4M_420 or fields.get(b"I", b"p") not in (b"p", b"?"):
            return None
        return header

    def read_into(self, flat: np.ndarray) -> bool | None:
        """Fill ``flat`` (frame_bytes, contiguous) with the next picture: True;
        False at the end of the file; None for a damaged FRAME marker."""
        line = self._f.readline(256)
        if not line:
            return False
        if not line.startswith(b"FRAME"):
            return None
        return self._f.readinto(flat.data.cast("B")) == self.frame_bytes

    def rewind(self) -> None:
        self._f.seek(self._first)

    def close(self) -> None:
        self._f.close()


class FileCapture(CaptureSource):
    """Loops a video file. Options: ``path`` (required), ``loop`` (default
    true), ``stamp`` (draw the frame stamp, default true), ``pixel_format``
    (default the spec's)."""

    def __init__(self, spec: StreamSpec, options: dict[str, Any] | None = None) -> None:
        opts = FileOptions.take("file", options)
        self.path = opts.path
        self.loop = opts.loop
        self.stamp = opts.stamp
        self.format = opts.pixel_format or spec.pixel_format
        self.width, self.height = spec.width, spec.height
        if self.stamp:
            stamp.cell_size(self.width, self.height)
        self.decode_errors = 0
        self.loops = 0
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._y4m: Y4MReader | None = None
        header = Y4MReader.probe(self.path, self.width, self.height) if self.format == "i420" else None
        if header is not None:
            self._y4m = Y4MReader(self.path, self.width, self.height, header)
        else:
            self._open()  # fail now with a clear message when the file is unusable
        self._ring = [alloc_planes(self.width, self.height, self.format) for _ in range(RING)]
        self._next = 0
        self._last: tuple[np.ndarray, ...] | None = None
        self._ended = False

    def _open(self) -> None:
        self._close_container()
        try:
            container = av.open(self.path)
        except (OSError, av.error.FFmpegError) as exc:
            raise ValueError(f"file: cannot open {self.path!r}: {exc}") from None
        if not container.streams.video:
            container.close()
            raise ValueError(f"file: {self.path!r} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        self._container = container
        self._frames = self._decode(container, stream)

    def _decode(self, container: Any, stream: Any) -> Iterator[Any]:
        bad_run = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    self.decode_errors += 1
                    bad_run += 1
                    if bad_run >= MAX_BAD_RUN:
                        return
                    continue
                bad_run = 0
                yield from frames
        except av.error.FFmpegError:  # demuxer gave up (truncated or corrupt file)
            self.decode_errors += 1

    def _next_picture(self, read: Callable[[], Any], rewind: Callable[[], None]) -> Any | None:
        """``read()``'s next picture; at the end of the file rewind once and read
        again when looping, else None."""
        for attempt in range(2):
            picture = read()
            if picture is not None:
                return picture
            if not self.loop or attempt:
                return None
            self.loops += 1
            rewind()
        return None

    def _decoded(self) -> Any | None:
        return next(self._frames, None) if self._frames is not None else None

    def _y4m_into(self, flat: np.ndarray) -> np.ndarray | None:
        assert self._y4m is not None
        ok = self._y4m.read_into(flat)
        if ok is None:  # not a FRAME marker: the rest of the file is unusable
            self.decode_errors += 1
        return flat if ok else None

    def grab(self, frame_id: int) -> Frame:
        flat, planes = self._ring[self._next]
        if self._ended:
            got = False
        elif self._y4m is not None:
            got = self._next_picture(lambda: self._y4m_into(flat), self._y4m.rewind) is not None
        else:
            vf = self._next_picture(self._decoded, self._open)
            got = vf is not None
            if vf is not None:
                copy_av_frame(vf.reformat(width=self.width, height=self.height, format=AV_FORMAT[self.format]),
                              planes)
        if not got:
            self._ended = True
            if self._last is None:
                raise RuntimeError(f"file: {self.path!r} has no decodable picture")
            planes, repeat = self._last, True
        else:
            self._next = (self._next + 1) % RING
            self._last, repeat = planes, False
        capture_ns = time.monotonic_ns()
        if self.stamp:
            chroma = planes[1:] if self.format == "i420" else planes[1]
            stamp.draw_stamp(planes[0], frame_id, (capture_ns // 1000) & 0xFFFFFFFF, chroma)
        return Frame(planes, self.format, self.width, self.height, frame_id, capture_ns, is_repeat=repeat)

    def _close_container(self) -> None:
        if self._container is not None:
            self._frames = None
            self._container.close()
            self._container = None

    def close(self) -> None:
        self._close_container()
        if self._y4m is not None:
            self._y4m.close()
