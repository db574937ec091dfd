"""The options each builtin input stage takes, declared once (see :mod:`punktfunk_core.settings`).

The plugin registers each class's schema with its stage, so ``punktfunk config
check`` holds ``input.backend_options`` to the backend ``input.backend`` names;
each stage reads its options with ``XOptions.take(name, options)``. This
module imports no backend library: registering a stage must not load one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from punktfunk_core.settings import NOTE_KEY, Settings, setting

#: the kernel's uinput device node
DEVICE = "/dev/uinput"


@dataclass(frozen=True, kw_only=True)
class XTestOptions(Settings):
    """Options of the xtest input stage."""

    display: str = setting("", "X11 display (default: $DISPLAY)")


@dataclass(frozen=True, kw_only=True)
class UInputOptions(Settings):
    """Options of the uinput input stage."""

    device: str = setting(DEVICE, "the uinput device node", minLength=1)
    name: str = setting("punktfunk", "prefix of the virtual devices' names")


#: the backends ``auto`` may pick, first choice first
AUTO_CANDIDATES: tuple[tuple[str, type[Settings]], ...] = (("xtest", XTestOptions), ("uinput", UInputOptions))


def auto_options_schema() -> dict[str, Any]:
    """``auto`` hands its options to the backend it picks, so they must suit every one it
    may pick (else a config that works on one machine fails on the next); each problem
    says for which."""
    return {"type": "object", "description": "Options of the auto input stage: those every backend it may pick takes.",
            "allOf": [{**cls.schema(), NOTE_KEY: f"for {name}, which the auto input backend may pick; name the "
                                                 f"backend to give only its options"}
                      for name, cls in AUTO_CANDIDATES]}
