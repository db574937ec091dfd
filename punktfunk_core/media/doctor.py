"""What ``punktfunk doctor`` says about the media stages: the X display the x11
capture reads (and XFixes, its pointer), the sound server desktop audio
records, and NVENC. Each check reuses the probe of its stage, under a deadline."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from punktfunk_core.doctor import FAIL, OK, PROBE_TIMEOUT_S, WARN, Finding, ProbeTimeout, bounded


def display_name() -> str:
    return os.environ.get("DISPLAY", "")


def display_extensions(name: str, *extensions: str) -> dict[str, bool]:
    """Which of ``extensions`` the X display ``name`` has; raises :class:`ProbeTimeout` for a
    server that does not answer in time, and python-xlib's errors for one that is not reachable."""
    from Xlib import display as xdisplay

    def probe() -> dict[str, bool]:
        d = xdisplay.Display(name)
        try:
            return {ext: bool(d.has_extension(ext)) for ext in extensions}
        finally:
            d.close()

    return bounded(probe)


def check_display() -> list[Finding]:
    """X display reachable, and XFixes (the pointer in x11 captures)."""
    name = display_name()
    if not name:
        fix = ("run the host inside the desktop session (the systemd user service imports DISPLAY from it), "
               "or set DISPLAY=:0")
        return [Finding("x11-display", WARN, "DISPLAY is not set: no x11 capture, no XTest input", fix)]
    try:
        import Xlib  # noqa: F401
    except ImportError:
        return [Finding("x11-display", FAIL, "python-xlib is not installed", "pip install python-xlib")]
    try:
        xfixes = display_extensions(name, "XFIXES")["XFIXES"]
    except ProbeTimeout as exc:
        return [Finding("x11-display", FAIL, f"X display {name} accepted the connection but gave {exc}",
                        "is the X server frozen or a stale socket left in /tmp/.X11-unix?")]
    except Exception as exc:  # noqa: BLE001 - python-xlib raises DisplayError, OSError and more
        return [Finding("x11-display", FAIL, f"X display {name} is not reachable: {exc}",
                        "start the host from the desktop session, or allow it: xhost +SI:localuser:$USER")]
    return [Finding("x11-display", OK, f"X display {name} reachable"),
            Finding("cursor", OK, "XFixes present: the pointer is drawn into x11 captures") if xfixes else
            Finding("cursor", WARN, f"X display {name} has no XFIXES extension: captures show no pointer",
                    "enable XFIXES in the X server (every desktop X server has it)")]


def check_sound() -> list[Finding]:
    """A PulseAudio-protocol server answers and offers a monitor source (what the desktop plays)."""
    from punktfunk_core.media.desktop_audio import server_answers

    reason = server_answers(PROBE_TIMEOUT_S)
    if reason:
        fix = ("apt-get install pulseaudio-utils" if "not installed" in reason else
               "run the host in the desktop session (PipeWire's pipewire-pulse or PulseAudio), or set PULSE_SERVER")
        return [Finding("sound", WARN, f"no desktop audio: {reason} (streams carry a tone)", fix)]
    try:
        done = subprocess.run(["pactl", "list", "short", "sources"], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [Finding("sound", WARN, f"the sound server did not list its sources within {PROBE_TIMEOUT_S:g} s")]
    monitors = [f[1] for f in (line.split("\t") for line in done.stdout.splitlines()) if len(f) > 1
                and f[1].endswith(".monitor")]
    if not monitors:
        return [Finding("sound", WARN, "the sound server answers but has no monitor source: nothing to record",
                        "add an output (a null sink will do: pactl load-module module-null-sink)")]
    return [Finding("sound", OK, f"sound server answers; monitor source {monitors[0]}"
                    + (f" (+{len(monitors) - 1} more)" if len(monitors) > 1 else ""))]


def _nvidia_driver() -> str:
    try:
        with open("/proc/driver/nvidia/version", encoding="ascii", errors="replace") as f:
            first = f.readline()
    except OSError:
        return ""
    words = first.split()
    return next((w for w in words if w[:1].isdigit() and "." in w), first.strip())


def check_nvenc() -> list[Finding]:
    from punktfunk_core.media.nvenc import available

    driver = _nvidia_driver()
    try:
        reason = bounded(lambda: available("h264"), PROBE_TIMEOUT_S * 3)
    except ProbeTimeout as exc:
        reason = f"the NVENC probe gave {exc}"
    if not reason:
        return [Finding("nvenc", OK, f"NVENC usable (driver {driver or 'unknown'})")]
    if "not installed" in reason:
        fix = ("pip install 'punktfunk[nvenc]'" if driver else
               "needs an NVIDIA GPU and its driver; x264 is used meanwhile")
    else:
        fix = "install or update the NVIDIA driver (nvidia-smi must work)" if not driver else "check nvidia-smi"
    return [Finding("nvenc", WARN, f"{reason}; encoding falls back to the CPU"
                    + (f" (driver {driver})" if driver else " (no NVIDIA driver loaded)"), fix)]


def findings(config: dict[str, Any]) -> list[Finding]:
    return check_display() + check_sound() + check_nvenc()
