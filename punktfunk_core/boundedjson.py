"""JSON the host reads, bounded in size and depth.

Every JSON document the host takes in — IPC requests, captures and their
index, paired-client lists, known hosts, console request bodies — goes through
:func:`loads` (or :func:`load_file` for files). A document that is larger than
its caller's bound, nested deeper than ``max_depth`` or holds a number that is
not finite (``NaN``, ``Infinity``, ``1e999``) raises :class:`JsonRefused`, a
``ValueError`` with a one-line reason. The standard decoder recurses once per
level and raises ``RecursionError`` (not a ``ValueError``) around a thousand
levels; here that becomes a refusal too, so a caller that handles ``ValueError``
handles every bad document.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any

from punktfunk_core.paths import read_regular_file

#: deeper than anything the host writes (a capture is 5 levels deep)
MAX_DEPTH = 32
#: small owner-only stores: paired clients, known hosts (a few KB per entry)
MAX_STORE_BYTES = 4 * 1024 * 1024

_DECODER = json.JSONDecoder()


class JsonRefused(ValueError):
    """Not JSON, too large, too deep, or a number that is not finite."""


def problems(value: Any, max_depth: int = MAX_DEPTH) -> Iterator[tuple[list[Any], str]]:
    """``(key path, reason)`` for each non-finite float, and for the first container
    nested deeper than ``max_depth`` (where the walk stops). Iterative: any depth is safe."""
    if isinstance(value, float) and not math.isfinite(value):
        yield [], f"{value!r} is not a finite number"
    if not isinstance(value, (dict, list)):
        return
    stack: list[tuple[Any, list[Any]]] = [(value, [])]
    while stack:
        container, path = stack.pop()
        if len(path) >= max_depth:
            yield path, f"nested more than {max_depth} levels deep"
            return
        for key, v in (container.items() if isinstance(container, dict) else enumerate(container)):
            if isinstance(v, (dict, list)):
                stack.append((v, [*path, key]))
            elif isinstance(v, float) and not math.isfinite(v):
                yield [*path, key], f"{v!r} is not a finite number"


def _sound(value: Any, max_depth: int) -> bool:
    """True when :func:`problems` finds nothing; the fast walk every document takes
    (a 5400-sample capture is about 200 000 values)."""
    t = type(value)
    if t is float:
        return math.isfinite(value)
    if t is not dict and t is not list:
        return True
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        container, depth = pop()
        for v in (container.values() if type(container) is dict else container):
            t = type(v)
            if t is float:
                if v - v != 0.0:  # inf - inf and nan - nan are nan
                    return False
            elif t is dict or t is list:
                if depth >= max_depth:
                    return False
                push((v, depth + 1))
    return True


def _check(value: Any, max_depth: int) -> Any:
    if _sound(value, max_depth):
        return value
    for path, reason in problems(value, max_depth):
        where = "/".join(str(k) for k in path[:8]) + ("/…" if len(path) > 8 else "")
        raise JsonRefused(f"{where}: {reason}" if path else reason)
    return value


def loads(data: bytes | bytearray | str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON document of at most ``max_bytes``; :class:`JsonRefused` when it is bad."""
    if len(data) > max_bytes:
        raise JsonRefused(f"larger than {max_bytes} bytes")
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonRefused(f"nested more than {max_depth} levels deep") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise JsonRefused(f"not JSON: {exc}") from None
    return _check(value, max_depth)


def decode_prefix(text: str, start: int = 0, *, max_depth: int = MAX_DEPTH) -> tuple[Any, int]:
    """Like ``JSONDecoder.raw_decode``: the value at ``text[start:]`` and where it ends."""
    try:
        value, end = _DECODER.raw_decode(text, start)
    except RecursionError:
        raise JsonRefused(f"nested more than {max_depth} levels deep") from None
    except ValueError as exc:
        raise JsonRefused(f"not JSON: {exc}") from None
    return _check(value, max_depth), end


def load_file(path: str | os.PathLike[str], *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Read and parse a regular file (never a FIFO or device; never waits).

    OSError (FileNotFoundError …) passes through; a bad file raises
    :class:`JsonRefused` or :class:`punktfunk_core.paths.FileRefused` (both ValueError).
    """
    return loads(read_regular_file(path, max_bytes), max_bytes=max_bytes, max_depth=max_depth)


__all__ = ["MAX_DEPTH", "MAX_STORE_BYTES", "JsonRefused", "decode_prefix", "load_file", "loads", "problems"]
