"""Option checking shared by the builtin media stages.

Every stage takes an ``options`` dict from the config (``stream.capture_options``
…) or from a protocol. Unknown keys are a configuration mistake, so they raise
``ValueError`` naming the keys the stage does know.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping


def take_options(stage: str, options: Mapping[str, Any] | None, defaults: Mapping[str, Any],
                 checks: Mapping[str, Callable[[Any], Any]] | None = None) -> dict[str, Any]:
    """Merge ``options`` over ``defaults`` and convert each value.

    ``checks[key](value)`` converts/validates one value (raise ValueError or
    TypeError to reject it); keys without a check are converted to the type of
    their default when the default is a bool/int/float/str.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{stage}: unknown option(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(sorted(defaults)) or 'none'})")
    out = dict(defaults)
    checks = checks or {}
    for key, value in options.items():
        try:
            if key in checks:
                out[key] = checks[key](value)
            else:
                out[key] = _like(defaults[key], value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{stage}: option {key!r}: {exc}") from None
    return out


def _like(default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{value!r} is not a boolean")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string")
        return value
    return value


def one_of(*allowed: str) -> Callable[[Any], str]:
    """A check accepting only the given strings."""
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return value
    return check


def int_range(lo: int, hi: int) -> Callable[[Any], int]:
    """A check accepting integers in ``lo..hi``."""
    def check(value: Any) -> int:
        v = _like(0, value)
        if not lo <= v <= hi:
            raise ValueError(f"{v} is not in {lo}..{hi}")
        return v
    return check
