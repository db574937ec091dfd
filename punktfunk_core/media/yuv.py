"""4:2:0 picture buffers laid out the way encoders want them.

A picture is one contiguous buffer of ``w*h*3/2`` bytes — Y, then U and V
(I420) or the interleaved UV plane (NV12) — and the :class:`Frame` planes are
views into it. An encoder can then hand the whole buffer to PyAV with
``VideoFrame.from_numpy_buffer`` (zero copy) instead of copying plane by plane.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from punktfunk_core.stages import Frame

if TYPE_CHECKING:
    import av

#: our pixel format names → PyAV/FFmpeg names
AV_FORMAT = {"i420": "yuv420p", "nv12": "nv12"}


def alloc_planes(width: int, height: int, fmt: str) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """One contiguous 4:2:0 buffer shaped (h*3/2, w) and the plane views into it."""
    w, h = width, height
    flat = np.empty(w * h * 3 // 2, dtype=np.uint8)
    y = flat[: w * h].reshape(h, w)
    if fmt == "i420":
        q = (w // 2) * (h // 2)
        u = flat[w * h : w * h + q].reshape(h // 2, w // 2)
        v = flat[w * h + q :].reshape(h // 2, w // 2)
        planes: tuple[np.ndarray, ...] = (y, u, v)
    elif fmt == "nv12":
        planes = (y, flat[w * h :].reshape(h // 2, w))
    else:
        raise ValueError(f"unsupported pixel format {fmt!r} (i420 or nv12)")
    return flat.reshape(h * 3 // 2, w), planes


def _addr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def packed_view(frame: Frame) -> np.ndarray | None:
    """The (h*3/2, w) buffer behind ``frame``'s planes when they are laid out
    back to back in one contiguous block (as :func:`alloc_planes` makes them),
    else None."""
    w, h = frame.width, frame.height
    planes = frame.planes
    base = planes[0].base
    if base is None or not isinstance(base, np.ndarray) or not base.flags.c_contiguous:
        return None
    if base.nbytes != w * h * 3 // 2 or _addr(base) != _addr(planes[0]):
        return None
    start = _addr(base)
    off = 0
    for p in planes:
        if not p.flags.c_contiguous or _addr(p) != start + off:
            return None
        off += p.nbytes
    if off != base.nbytes:
        return None
    return base.reshape(h * 3 // 2, w)


def pack_into(frame: Frame, out: np.ndarray) -> np.ndarray:
    """Copy ``frame``'s planes into the (h*3/2, w) buffer ``out`` (same format)."""
    flat = out.reshape(-1)
    off = 0
    for p in frame.planes:
        n = p.size
        flat[off : off + n].reshape(p.shape)[...] = p
        off += n
    if off != flat.size:
        raise ValueError(f"frame planes hold {off} bytes, a {frame.width}x{frame.height} 4:2:0 picture has {flat.size}")
    return out


def copy_av_frame(vf: av.VideoFrame, planes: tuple[np.ndarray, ...]) -> None:
    """Copy a decoded/reformatted ``av.VideoFrame`` (yuv420p or nv12, same size)
    into our plane arrays, dropping PyAV's line padding."""
    for src, dst in zip(vf.planes, planes, strict=False):
        rows, cols = dst.shape
        buf = np.frombuffer(memoryview(src), dtype=np.uint8).reshape(-1, src.line_size)
        np.copyto(dst, buf[:rows, :cols])


def convert_into(frame: Frame, fmt: str, out: np.ndarray) -> np.ndarray:
    """Write ``frame`` (i420 or nv12) into the (h*3/2, w) buffer ``out`` in
    format ``fmt``: a plain copy, or an I420↔NV12 chroma (de)interleave."""
    w, h = frame.width, frame.height
    flat = out.reshape(-1)
    if frame.format == fmt:
        return pack_into(frame, out)
    y = flat[: w * h].reshape(h, w)
    np.copyto(y, frame.planes[0])
    q = (w // 2) * (h // 2)
    if frame.format == "i420" and fmt == "nv12":
        uv = flat[w * h :].reshape(h // 2, w // 2, 2)
        uv[:, :, 0] = frame.planes[1]
        uv[:, :, 1] = frame.planes[2]
    elif frame.format == "nv12" and fmt == "i420":
        src = frame.planes[1].reshape(h // 2, w // 2, 2)
        flat[w * h : w * h + q].reshape(h // 2, w // 2)[...] = src[:, :, 0]
        flat[w * h + q :].reshape(h // 2, w // 2)[...] = src[:, :, 1]
    else:
        raise ValueError(f"cannot convert {frame.format} to {fmt}")
    return out
