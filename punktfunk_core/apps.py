"""Apps a client can launch: the ``[[apps]]`` list of the config file, shared by every protocol.

An app is a command (``cmd``) with optional ``working_dir``, ``env`` and
``prep`` steps (``{do, undo}`` commands run before it starts and after it
ends). "Desktop" is built in (id 1, no command): streaming the screen as it
is. :class:`AppLauncher` runs one app at a time:

- launch: every prep ``do`` in order (a failing one undoes the ones before it
  and fails the launch), then ``cmd`` in a process group of its own;
- quit: SIGTERM to the group, SIGKILL after ``exit_timeout``, then the
  ``undo`` commands in reverse order;
- an app that exits by itself is ended the same way and reported through
  ``on_exit`` (the protocol ends the stream on it);
- an operator's quit (``punktfunk apps quit``, the console) goes through
  :meth:`AppLauncher.quit_from_operator`: the launching protocol's ``on_quit``
  ends its stream first, then the app ends as above.

Ids are stable: the first 31 bits of the SHA-256 of the app's name (0 and 1
are never given: 0 means "none" to GameStream clients, 1 is Desktop), so
reordering the list or restarting the host keeps every id. Two names that
would share an id, or the same name twice, are a config error.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from punktfunk_core.settings import LIVE_NOW, REQUIRED, Problem, Settings, SettingsList, setting

log = logging.getLogger("punktfunk.apps")

DESKTOP_NAME = "Desktop"
DESKTOP_ID = 1
#: a prep or undo command that takes longer is killed (and counts as failed)
STEP_TIMEOUT_S = 15.0
#: how long after SIGKILL a process group may take to disappear before we stop waiting
KILL_WAIT_S = 2.0

#: the schema keywords of a command: a program and its arguments, no shell
_COMMAND: dict[str, Any] = {"minItems": 1, "maxItems": 256, "items": {"minLength": 1, "maxLength": 4096}}


class LaunchError(RuntimeError):
    """An app could not be started; the message says why, for the client and the log."""


@dataclass(frozen=True, kw_only=True)
class PrepStep(Settings):
    """A step run before the app starts (do) and after it ends (undo)."""

    do: tuple[str, ...] = setting(REQUIRED, "command run before the app", **_COMMAND)
    undo: tuple[str, ...] | None = setting(None, "command run after the app ends (steps in reverse order)",
                                           **_COMMAND)


@dataclass(frozen=True, kw_only=True)
class App(Settings):
    """An app clients can launch (one ``[[apps]]`` table)."""

    # every app but Desktop needs a command
    schema_rules = ({"if": {"properties": {"name": {"not": {"const": DESKTOP_NAME}}}}, "then": {"required": ["cmd"]}},)

    name: str = setting(REQUIRED, "shown to clients; the app's id is derived from it",
                        minLength=1, maxLength=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    cmd: tuple[str, ...] | None = setting(None, "the command and its arguments (no shell); Desktop has none",
                                          **_COMMAND)
    working_dir: str | None = setting(None, "directory the app and its prep steps start in (~ is expanded)",
                                      minLength=1, maxLength=4096)
    env: Mapping[str, str] = setting({}, "environment variables added for the app and its prep steps",
                                     maxProperties=256, propertyNames={"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                                     additionalProperties={"maxLength": 65536})
    prep: tuple[PrepStep, ...] = setting((), "steps run before the app (do) and after it (undo, in reverse)",
                                         maxItems=64)
    detached: bool = setting(False, "start the command and do not track it (launchers that hand off and exit)")
    exit_timeout: float = setting(5.0, "seconds between SIGTERM and SIGKILL when the app is quit",
                                  minimum=0, maximum=600)

    @functools.cached_property
    def id(self) -> int:
        return app_id(self.name)

    @property
    def cwd(self) -> str | None:
        """The directory it starts in (None: the host's)."""
        return os.path.expanduser(self.working_dir) if self.working_dir else None

    def describe(self) -> dict[str, Any]:
        """What a client or the console is shown."""
        return {"id": self.id, "name": self.name, "desktop": self.id == DESKTOP_ID}

    def summary(self) -> str:
        """The command as one shell-quoted line, cut to 200 characters (the operator's view)."""
        if not self.cmd:
            return ""
        line = shlex.join(self.cmd)
        return line if len(line) <= 200 else line[:199] + "…"


def app_id(name: str) -> int:
    """The stable id of the app called ``name``."""
    if name == DESKTOP_NAME:
        return DESKTOP_ID
    value = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF
    return value if value > DESKTOP_ID else value + 2


def problems(entries: Any) -> list[Problem]:
    """What the schema cannot say: the same name twice, two names with one id."""
    out: list[Problem] = []
    seen: dict[int, tuple[int, str]] = {}
    if not isinstance(entries, (list, tuple)):
        return out  # the schema says what is wrong with it
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str):
            continue
        ident = app_id(name)
        if ident in seen:
            j, other = seen[ident]
            why = "the same name as" if other == name else f"the same id ({ident}) as {other!r} in"
            out.append(Problem((i, "name"), f"{name!r} has {why} apps.{j}"))
        else:
            seen[ident] = (i, name)
    return out


#: the top-level ``[[apps]]`` list (a section of config.CORE_SECTIONS)
APPS = SettingsList(App, "Apps clients can launch ([[apps]] tables); Desktop (stream the screen, no command) is "
                         "built in.", max_items=256, rule=problems, live=LIVE_NOW)


def load_apps(entries: Sequence[Mapping[str, Any]]) -> list[App]:
    """The app list from ``[[apps]]`` entries (``cfg["apps"]``), checked: Desktop first, then the
    rest in config order. An entry named Desktop configures the built-in one. ``ValueError``
    names each problem by key path."""
    apps = [App(name=DESKTOP_NAME)]
    for app in APPS.take("apps", entries):
        if app.id == DESKTOP_ID:
            apps[0] = app
        else:
            apps.append(app)
    return apps


ExitCallback = Callable[["RunningApp", "int | None"], None]
#: ``on_quit(running, reason)``: the launching protocol ends the stream of this app
QuitCallback = Callable[["RunningApp", str], None]


@dataclass(eq=False)
class RunningApp:
    """The app that runs now: its process (None for Desktop and detached apps) and what ran before it."""

    app: App
    proc: subprocess.Popen[bytes] | None
    #: the prep steps whose ``do`` succeeded, in order (their undo runs in reverse)
    prepared: tuple[PrepStep, ...]
    started: float = field(default_factory=time.monotonic)
    #: the wall-clock time it started (seconds since the epoch), for the operator
    since: float = field(default_factory=time.time)
    #: set once, by whoever ends it first (quit or the app exiting)
    ending: bool = False
    #: the launching protocol's own ``on_exit`` (called before the launcher's)
    on_exit: ExitCallback | None = None
    #: the launching protocol's way to end its stream when someone else quits the app
    on_quit: QuitCallback | None = None
    #: who launched it: the protocol and the client's name ("" when not said)
    protocol: str = ""
    client: str = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def describe(self) -> dict[str, Any]:
        """The running app for the operator: the app, its process (group) and who launched it."""
        return {**self.app.describe(), "cmd": self.app.summary(), "pid": self.pid,
                "pgid": self.pid,  # started with start_new_session: the leader's pid is the group id
                "detached": self.app.detached, "since": self.since,
                "seconds": round(time.monotonic() - self.started, 1),
                "protocol": self.protocol or None, "client": self.client or None}


class AppLauncher:
    """Launches and quits the configured apps, one at a time. Thread-safe: launch and
    quit may come from any thread; each returns within the bounds its docstring gives."""

    def __init__(self, apps: Sequence[App], on_exit: ExitCallback | None = None) -> None:
        self.apps = self._with_desktop(apps)
        #: called on the watcher thread as ``on_exit(running, returncode)`` after an app
        #: that exited by itself was cleaned up (group ended, undo done)
        self.on_exit = on_exit
        self._lock = threading.Lock()  # guards _running; never held while a command runs
        self._running: RunningApp | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], on_exit: ExitCallback | None = None) -> AppLauncher:
        return cls(load_apps(cfg["apps"]), on_exit)

    @staticmethod
    def _with_desktop(apps: Sequence[App]) -> list[App]:
        listed = list(apps)
        if not listed or listed[0].id != DESKTOP_ID:
            listed.insert(0, App(name=DESKTOP_NAME))
        return listed

    def replace_apps(self, apps: Sequence[App]) -> None:
        """Take a reloaded ``[[apps]]`` list. Lookups see the old list or the whole new one
        (one assignment); an app already running keeps running, under its old definition,
        until it is quit or exits, even when the new list dropped or changed it."""
        self.apps = self._with_desktop(apps)

    def find(self, key: int | str) -> App:
        """The app with this id (int) or name (str); LookupError when there is none."""
        for app in self.apps:
            if app.id == key or app.name == key:
                return app
        raise LookupError(f"no app {key!r}")

    @property
    def running(self) -> RunningApp | None:
        return self._running

    def launch(self, key: int | str, env: Mapping[str, str] | None = None,
               on_exit: ExitCallback | None = None, on_quit: QuitCallback | None = None,
               protocol: str = "", client: str = "") -> RunningApp:
        """Run the prep steps and start the app; ``env`` adds per-session variables, ``on_exit``
        is told (like the launcher's) when this app exits by itself, ``on_quit`` when the
        operator quits it (:meth:`quit_from_operator`); ``protocol`` and ``client`` say who
        launched it (shown to the operator). Returns
        the running app (the one already running when it is the same app). Raises
        :class:`LaunchError` when a step or the command fails, with everything it had done
        undone. Takes at most ``STEP_TIMEOUT_S`` per prep step (and per undo on failure)."""
        app = self.find(key)
        with self._lock:
            current = self._running
            if current is not None and not current.ending:
                if current.app.id == app.id:
                    return current
                raise LaunchError(f"{current.app.name!r} is running; quit it before launching {app.name!r}")
            # claim the slot while the prep steps run, so a second launch cannot start too
            claim = RunningApp(app, None, ())
            self._running = claim
        try:
            running = self._start(app, dict(env or {}))
            running.on_exit, running.on_quit = on_exit, on_quit
            running.protocol, running.client = protocol, client
        except BaseException:
            with self._lock:
                if self._running is claim:
                    self._running = None
            raise
        with self._lock:
            quit_meanwhile = claim.ending
            if not quit_meanwhile:
                self._running = running
        if quit_meanwhile:  # quit came while the prep steps ran: it ends what they started
            running.ending = True
            self._end(running)
            raise LaunchError(f"app {app.name!r} was quit while it started")
        if running.proc is not None:
            threading.Thread(target=self._watch, args=(running,), name=f"app-{app.id}", daemon=True).start()
        return running

    def quit(self) -> RunningApp | None:
        """End the running app: SIGTERM to its process group, SIGKILL after its
        ``exit_timeout``, then its undo steps in reverse. Returns what was running (None if
        nothing was). Bounded by exit_timeout + KILL_WAIT_S + STEP_TIMEOUT_S per undo step."""
        running = self._running
        return running if running is not None and self._quit_if_running(running) else None

    def quit_from_operator(self, reason: str = "quit by the operator") -> RunningApp | None:
        """End the running app from outside its protocol (``apps.quit``: CLI, console) without
        waiting: the launching protocol's ``on_quit`` ends its stream at once (on this thread;
        it must not wait for the app), then a thread of its own quits the app (:meth:`quit`).
        Returns what was running (None if nothing was)."""
        with self._lock:
            running = self._running
            if running is None or running.ending:
                return None
        if running.on_quit is not None:
            try:
                running.on_quit(running, reason)
            except Exception:  # noqa: BLE001 - the app is quit all the same
                log.exception("app %r: the quit callback failed", running.app.name)
        log.info("app %r: %s", running.app.name, reason)
        threading.Thread(target=self._quit_if_running, args=(running,), name=f"app-{running.app.id}-quit",
                         daemon=True).start()
        return running

    @staticmethod
    def ending_bound(running: RunningApp) -> float:
        """The most seconds quitting ``running`` takes (group, then every undo step)."""
        undo = sum(1 for step in running.prepared if step.undo)
        return (running.app.exit_timeout + KILL_WAIT_S if running.proc is not None else 0.0) + undo * STEP_TIMEOUT_S

    def _quit_if_running(self, running: RunningApp) -> bool:
        """End ``running`` if it still runs and nobody else is ending it (a quit, its own
        exit, its protocol's on_quit): whoever sets ``ending`` first ends it."""
        with self._lock:
            if self._running is not running or running.ending:
                return False
            running.ending = True
        self._finish(running)
        return True

    def status(self) -> dict[str, Any]:
        """The apps (with their command lines) and the running one, for the operator; an app
        being quit stays there (``ending``) until its group is gone and its undo steps ran."""
        running = self._running
        return {"apps": [{**a.describe(), "cmd": a.summary()} for a in self.apps],
                "running": None if running is None else {**running.describe(), "ending": running.ending}}

    # -- inside ------------------------------------------------------------------------

    def _environment(self, app: App, extra: Mapping[str, str]) -> dict[str, str]:
        return {**os.environ, **app.env, "PUNKTFUNK_APP_ID": str(app.id), "PUNKTFUNK_APP_NAME": app.name, **extra}

    def _start(self, app: App, extra: dict[str, str]) -> RunningApp:
        cwd = app.cwd
        if cwd is not None and not os.path.isdir(cwd):
            log.error("app %r: working_dir %s is not a directory", app.name, cwd)
            raise LaunchError(f"app {app.name!r}: working_dir {cwd} is not a directory")
        env = self._environment(app, extra)
        done: list[PrepStep] = []
        for i, step in enumerate(app.prep):
            failure = _run_step(step.do, env, cwd)
            if failure:
                log.error("app %r: prep step %d %s %s; undoing %d step(s)", app.name, i, list(step.do), failure,
                          len(done))
                self._undo(app, done, env, cwd)
                raise LaunchError(f"app {app.name!r}: prep step {i} ({step.do[0]}) {failure}")
            done.append(step)
        if not app.cmd:  # Desktop: nothing to start
            return RunningApp(app, None, tuple(done))
        try:
            proc = subprocess.Popen(list(app.cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            what = "not found" if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc))
            log.error("app %r: cannot start %s: %s", app.name, app.cmd[0], what)
            self._undo(app, done, env, cwd)
            raise LaunchError(f"app {app.name!r}: cannot start {app.cmd[0]}: {what}") from None
        log.info("app %r started (pid %d%s)", app.name, proc.pid, ", detached" if app.detached else "")
        return RunningApp(app, None if app.detached else proc, tuple(done))

    def _watch(self, running: RunningApp) -> None:
        assert running.proc is not None
        code = running.proc.wait()
        with self._lock:
            if running.ending:
                return  # quit is ending it
            running.ending = True
        log.info("app %r exited by itself (%s)", running.app.name, code)
        self._finish(running)
        for callback in (running.on_exit, self.on_exit):
            if callback is None:
                continue
            try:
                callback(running, code)
            except Exception:  # noqa: BLE001 - the callback's failure is its own
                log.exception("app %r: the exit callback failed", running.app.name)

    def _finish(self, running: RunningApp) -> None:
        """End an app whose ``ending`` this thread set, then free the slot."""
        try:
            self._end(running)
        finally:
            with self._lock:
                if self._running is running:
                    self._running = None

    def _end(self, running: RunningApp) -> None:
        app = running.app
        if running.proc is not None:
            _end_group(running.proc, app.exit_timeout)
            log.info("app %r ended", app.name)
        self._undo(app, list(running.prepared), self._environment(app, {}), app.cwd)

    def _undo(self, app: App, done: Sequence[PrepStep], env: dict[str, str], cwd: str | None) -> None:
        for step in reversed(done):
            if step.undo:
                failure = _run_step(step.undo, env, cwd)
                if failure:  # undo goes on: every step gets its chance to restore
                    log.warning("app %r: undo %s %s", app.name, list(step.undo), failure)


def _run_step(cmd: Sequence[str], env: dict[str, str], cwd: str | None) -> str:
    """Run one prep/undo command in a process group of its own; "" or what went wrong."""
    try:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        return "failed: command not found"
    except OSError as exc:
        return f"failed: {exc.strerror or exc}"
    try:
        _, err = proc.communicate(timeout=STEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _end_group(proc, 0)
        return f"failed: still running after {STEP_TIMEOUT_S:g} s (killed)"
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        return f"failed: exit {proc.returncode}" + (f" ({lines[-1][:200]})" if lines else "")
    return ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL what is left after ``grace``
    seconds; reaps the leader. Bounded: grace + KILL_WAIT_S."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_S)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while True:
            if proc.poll() is not None and not _group_alive(pgid):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
    if proc.poll() is None:
        log.warning("process group %d did not end after SIGKILL", pgid)
