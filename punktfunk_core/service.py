"""``punktfunk service install | uninstall | status``: the host as a systemd *user* service.

A user unit, not a system one: the host captures the user's desktop, plays
into the user's sound server and injects input into the user's session, all of
which belong to the login session. The unit is ``Type=notify``: the host says
``READY=1`` once it serves and feeds the watchdog while its IPC thread answers
(:mod:`punktfunk_core.sdnotify`), so systemd restarts a host that died or hung.

By default the unit belongs to ``graphical-session.target`` (it starts with the
desktop, which imports DISPLAY into the user manager, and stops with it);
``--headless`` binds it to ``default.target`` for a machine without a desktop
session. Starting at boot without a login needs ``loginctl enable-linger``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

UNIT_NAME = "punktfunk.service"
#: systemd restarts the host when it has not fed the watchdog for this long
WATCHDOG_SEC = 30
SYSTEMCTL_TIMEOUT_S = 10.0


def unit_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "systemd" / "user" / UNIT_NAME


def exec_start(config: str | None = None) -> list[str]:
    """The host's command line: this interpreter (absolute, so a virtualenv's) running the CLI module."""
    argv = [os.path.abspath(sys.executable), "-m", "punktfunk_core.cli", "serve"]
    if config:
        argv += ["-c", os.path.abspath(config)]
    return argv


def render_unit(argv: list[str], headless: bool = False) -> str:
    target = "default.target" if headless else "graphical-session.target"
    session = "" if headless else "PartOf=graphical-session.target\nAfter=graphical-session.target\n"
    return f"""# written by `punktfunk service install`; `punktfunk service uninstall` removes it
[Unit]
Description=punktfunk streaming host
{session}StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={shlex.join(argv)}
# `systemctl --user reload punktfunk`: serve re-reads its config file on SIGHUP
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=3
WatchdogSec={WATCHDOG_SEC}
TimeoutStopSec=20
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy={target}
"""


def _systemctl(*args: str) -> tuple[int, str]:
    """``systemctl --user ARGS``: (exit status, its words); 127 when systemctl is not installed."""
    exe = shutil.which("systemctl")
    if exe is None:
        return 127, "systemctl is not installed"
    try:
        done = subprocess.run([exe, "--user", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=SYSTEMCTL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return 124, f"systemctl --user {' '.join(args)} did not answer within {SYSTEMCTL_TIMEOUT_S:g} s"
    return done.returncode, (done.stdout + done.stderr).strip()


def user_manager_problem() -> str:
    """"" when a systemd user manager answers, else why not (a container has none, nor does su/sudo)."""
    rc, out = _systemctl("show-environment")
    if rc == 0:
        return ""
    return out.splitlines()[-1] if out else f"systemctl --user exited with {rc}"


def _no_manager(problem: str, what: str) -> str:
    return (f"no systemd user manager here ({problem}), so {what}: log in to a systemd session as this user "
            f"(not su/sudo; in a container there is none) and run `systemctl --user daemon-reload && "
            f"systemctl --user enable --now {UNIT_NAME}`")


def cmd_install(args: argparse.Namespace) -> int:
    path = unit_path()
    if args.config and not Path(args.config).is_file():
        print(f"punktfunk: {args.config}: no such file", file=sys.stderr)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    path.write_text(render_unit(exec_start(args.config), args.headless))
    print(f"{'updated' if existed else 'wrote'} {path}")
    problem = user_manager_problem()
    if problem:
        print(f"punktfunk: {_no_manager(problem, 'the unit is written but not enabled')}", file=sys.stderr)
        return 1
    for step in (("daemon-reload",), ("enable", *(["--now"] if args.now else []), UNIT_NAME)):
        rc, out = _systemctl(*step)
        if rc != 0:
            print(f"punktfunk: systemctl --user {' '.join(step)} failed: {out}", file=sys.stderr)
            return 1
    print(f"enabled {UNIT_NAME}"
          + (" and started it" if args.now else f" (start it: systemctl --user start {UNIT_NAME})"))
    if args.headless:
        print(f"to start it at boot without a login: sudo loginctl enable-linger {os.environ.get('USER', '$USER')}")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    path = unit_path()
    problem = user_manager_problem()
    if not problem:
        rc, out = _systemctl("disable", "--now", UNIT_NAME)
        if rc != 0 and path.exists():
            print(f"punktfunk: systemctl --user disable --now {UNIT_NAME} failed: {out}", file=sys.stderr)
    if not path.exists():
        print(f"{path} is not installed")
        return 0
    path.unlink()
    print(f"removed {path}")
    if problem:
        print(f"punktfunk: {_no_manager(problem, 'nothing was stopped or disabled')}", file=sys.stderr)
        return 1
    _systemctl("daemon-reload")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    path = unit_path()
    print(f"unit file: {path}" + ("" if path.exists() else " (not installed: punktfunk service install)"))
    problem = user_manager_problem()
    if problem:
        print(f"systemd user manager: none ({problem})")
        return 1 if not path.exists() else 0
    _, enabled = _systemctl("is-enabled", UNIT_NAME)
    _, active = _systemctl("is-active", UNIT_NAME)
    print(f"enabled: {enabled or '-'}; active: {active or '-'}")
    _, detail = _systemctl("show", "-p", "StatusText", "-p", "NRestarts", "--value", UNIT_NAME)
    lines = detail.splitlines()
    if lines and lines[0]:
        print(f"host says: {lines[0]}")
    if len(lines) > 1 and lines[1]:
        print(f"restarts: {lines[1]}")
    return 0 if path.exists() else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("service", help="run the host as a systemd user service (install, uninstall, status)")
    ssub = p.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    s = ssub.add_parser("install", help=f"write ~/.config/systemd/user/{UNIT_NAME} and enable it")
    s.add_argument("-c", "--config", metavar="FILE", help="config file the service runs with (made absolute)")
    s.add_argument("--headless", action="store_true",
                   help="start with the user manager (default.target), not with the desktop session")
    s.add_argument("--now", action="store_true", help="start it now too")
    s.set_defaults(func=cmd_install)
    s = ssub.add_parser("uninstall", help="stop, disable and remove the unit")
    s.set_defaults(func=cmd_uninstall)
    s = ssub.add_parser("status", help="where the unit is, whether it is enabled and running")
    s.set_defaults(func=cmd_status)
