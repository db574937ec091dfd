"""Loading a system C library through ctypes (libyuv, libopus): one way for all of them."""

from __future__ import annotations

import ctypes
import ctypes.util


def load_library(stem: str, soname: str, symbols: tuple[str, ...],
                 fallbacks: tuple[str, ...] = ()) -> tuple[ctypes.CDLL, str] | None:
    """The library ``lib<stem>`` (as the linker finds it, else ``soname``, else each path of
    ``fallbacks``) with every one of ``symbols``, and the name it was loaded by; None when none
    loads or one lacks a symbol."""
    for name in dict.fromkeys(n for n in (ctypes.util.find_library(stem), soname, *fallbacks) if n):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if all(hasattr(lib, symbol) for symbol in symbols):
            return lib, name
    return None
