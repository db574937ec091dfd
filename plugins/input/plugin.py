"""Entry point of the builtin input stages (``punktfunk_input.plugin``).

Registers the ``input`` stages ``xtest``, ``uinput``, ``none`` and ``auto``,
which picks for the host it runs on: xtest when ``DISPLAY`` is set, uinput
when /dev/uinput is writable, else none, with one log line saying why. The
backends' libraries are imported inside the factories, so a missing one only
disables its own stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from punktfunk_core import hookimpl
from punktfunk_core.inputevents import InputEvent
from punktfunk_core.media.options import NoOptions
from punktfunk_core.stages import InputBackend, StreamSpec

from punktfunk_input.options import UInputOptions, XTestOptions, auto_options_schema

log = logging.getLogger("punktfunk.input")


class NoInput(InputBackend):
    """Injects nothing: every event is counted as unsupported by the sink."""

    classes = frozenset()

    def __init__(self, spec: StreamSpec | None = None, options: dict[str, Any] | None = None) -> None:
        NoOptions.take("none", options)

    def inject(self, event: InputEvent) -> None:  # the sink never hands it one
        raise ValueError("the none input stage injects nothing")


def _xtest(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_input.xtest import XTestInput
    return XTestInput(spec, options)


def _xtest_available(codec: str | None = None) -> str:
    from punktfunk_input.xtest import available
    return available()


def _uinput(spec: StreamSpec, options: dict[str, Any]) -> Any:
    from punktfunk_input.uinput import UInputBackend
    return UInputBackend(spec, options)


def _uinput_available(codec: str | None = None) -> str:
    from punktfunk_input.uinput import available
    return available()


def choose(xtest_reason: Callable[[], str] = _xtest_available,
           uinput_reason: Callable[[], str] = _uinput_available) -> tuple[str, str]:
    """The backend ``auto`` picks here and why the others were not."""
    xtest = xtest_reason()
    if not xtest:
        return "xtest", ""
    uinput = uinput_reason()
    if not uinput:
        return "uinput", ""
    return "none", f"xtest: {xtest}; uinput: {uinput}"


def _auto(spec: StreamSpec, options: dict[str, Any]) -> InputBackend:
    name, why_not = choose()
    if name == "none":
        log.warning("input: no backend can inject here (%s); sessions run without input", why_not)
        return NoInput(spec, {})
    stage: InputBackend = (_xtest if name == "xtest" else _uinput)(spec, options)
    stage.name = name
    return stage


@hookimpl
def register_stages(registry: Any) -> None:
    registry.add("input", "xtest", _xtest, available=_xtest_available, options_schema=XTestOptions.schema(),
                 description="keyboard, mouse, touch and pen (as the pointer) on X11 through XTest (python-xlib)")
    registry.add("input", "uinput", _uinput, available=_uinput_available, options_schema=UInputOptions.schema(),
                 description="virtual keyboard, mouse, touch, pen and Xbox 360 pads through /dev/uinput (python-evdev)")
    registry.add("input", "none", NoInput, options_schema=NoOptions.schema(),
                 description="injects nothing (input is counted and dropped)")
    registry.add("input", "auto", _auto, options_schema=auto_options_schema(),
                 description="xtest when DISPLAY is set, uinput when /dev/uinput is writable, else none")


@hookimpl
def doctor_findings(config: dict[str, Any], register: Callable[..., None]) -> None:
    from punktfunk_input import doctor

    for finding in doctor.findings(config):
        register(finding)
