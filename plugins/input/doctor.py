"""What ``punktfunk doctor`` says about the input stages: XTest on the X display
(the xtest stage) and /dev/uinput (virtual gamepads, touch and pen)."""

from __future__ import annotations

from typing import Any

from punktfunk_core.doctor import OK, WARN, Finding, ProbeTimeout
from punktfunk_core.media.doctor import display_extensions, display_name


def check_xtest() -> list[Finding]:
    from punktfunk_input.xtest import available

    if available():  # no display (the x11-display line says how to get one) or no python-xlib
        return []
    name = display_name()
    try:
        xtest = display_extensions(name, "XTEST")["XTEST"]
    except (ProbeTimeout, Exception):  # noqa: BLE001 - the x11-display line says what is wrong with the display
        return []
    return [Finding("xtest", OK, "XTest present: keyboard, mouse, touch and pen (as the pointer) can be injected")
            if xtest else
            Finding("xtest", WARN, f"X display {name} has no XTEST extension: no input through xtest",
                    "enable XTEST in the X server, or use input.backend = \"uinput\"")]


def check_uinput() -> list[Finding]:
    from punktfunk_input.uinput import available

    reason = available()
    if reason:
        return [Finding("uinput", WARN, "no virtual controllers or touch through uinput", reason)]
    return [Finding("uinput", OK, "/dev/uinput writable: virtual gamepads, touch and pen can be created")]


def findings(config: dict[str, Any]) -> list[Finding]:
    return check_xtest() + check_uinput()
