"""The app launcher with real processes: prep steps, process groups, quit, undo, self-exit."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from punktfunk_core import apps as appsmod
from punktfunk_core.apps import DESKTOP_ID, AppLauncher, LaunchError, app_id, load_apps


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def launcher(tmp_path: Path, *entries: dict, on_exit=None) -> AppLauncher:
    return AppLauncher(load_apps(list(entries)), on_exit)


def journal(tmp_path: Path) -> list[str]:
    f = tmp_path / "journal"
    return f.read_text().split() if f.exists() else []


def step(tmp_path: Path, word: str) -> list[str]:
    """A command that appends ``word`` to the journal."""
    return ["sh", "-c", f'echo {word} >> "{tmp_path}/journal"']


def game(tmp_path: Path, body: str = "") -> list[str]:
    """An app: writes a marker (pid, directory, an env variable), starts a child in its group, sleeps."""
    return ["sh", "-c", f'echo "$$ $(pwd) $GAME_MODE $PUNKTFUNK_APP_NAME" > "{tmp_path}/marker"; {body}'
                        f'sleep 60 & wait']


def test_launch_runs_prep_then_the_app_in_its_own_group_and_quit_ends_the_group_then_undoes(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    lx = launcher(tmp_path, {"name": "Game", "cmd": game(tmp_path), "working_dir": str(work),
                             "env": {"GAME_MODE": "fast"},
                             "prep": [{"do": step(tmp_path, "do1"), "undo": step(tmp_path, "undo1")},
                                      {"do": step(tmp_path, "do2"), "undo": step(tmp_path, "undo2")}]})
    running = lx.launch("Game")
    assert wait_for(lambda: (tmp_path / "marker").exists())
    pid, cwd, mode, name = (tmp_path / "marker").read_text().split(maxsplit=3)
    assert int(pid) == running.pid and cwd == str(work) and mode == "fast" and name.strip() == "Game"
    assert os.getpgid(running.pid) == running.pid != os.getpgid(0)  # a group of its own
    assert journal(tmp_path) == ["do1", "do2"]
    assert lx.status()["running"]["name"] == "Game"
    assert lx.launch(app_id("Game")) is running  # launching it again resumes it
    assert lx.quit() is running
    assert group_gone(running.pid)  # the app and the child it started
    assert journal(tmp_path) == ["do1", "do2", "undo2", "undo1"]
    assert lx.running is None and lx.status()["running"] is None
    assert lx.quit() is None


def test_an_app_that_ignores_sigterm_is_killed_after_its_exit_timeout(tmp_path):
    lx = launcher(tmp_path, {"name": "Stubborn", "cmd": game(tmp_path, "trap '' TERM; "), "exit_timeout": 0.5})
    running = lx.launch("Stubborn")
    assert wait_for(lambda: (tmp_path / "marker").exists())
    t0 = time.monotonic()
    lx.quit()
    assert group_gone(running.pid)
    assert time.monotonic() - t0 >= 0.5  # it got its grace period first
    assert running.proc is not None and running.proc.returncode == -9


def test_an_app_that_exits_by_itself_is_cleaned_up_and_reported(tmp_path):
    ended = threading.Event()
    seen = []

    def on_exit(running, code):
        seen.append((running.app.name, code, journal(tmp_path)))
        ended.set()

    lx = launcher(tmp_path, {"name": "Short", "cmd": ["sh", "-c", "sleep 0.3; exit 3"],
                             "prep": [{"do": step(tmp_path, "do"), "undo": step(tmp_path, "undo")}]},
                  on_exit=on_exit)
    running = lx.launch("Short")
    assert ended.wait(10)
    assert seen == [("Short", 3, ["do", "undo"])]  # undo ran before the report
    assert lx.running is None and group_gone(running.pid)
    assert lx.quit() is None  # nothing left to quit, and no second report
    assert len(seen) == 1


def test_a_command_that_does_not_exist_fails_the_launch_with_one_log_line_and_undoes_prep(tmp_path, caplog):
    lx = launcher(tmp_path, {"name": "Ghost", "cmd": ["/nonexistent/ghost-game", "--fullscreen"],
                             "prep": [{"do": step(tmp_path, "do"), "undo": step(tmp_path, "undo")}]})
    with caplog.at_level(logging.INFO, logger="punktfunk.apps"):
        with pytest.raises(LaunchError, match=r"'Ghost': cannot start /nonexistent/ghost-game: not found"):
            lx.launch("Ghost")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "ghost-game" in errors[0].getMessage()
    assert journal(tmp_path) == ["do", "undo"]
    assert lx.running is None
    # the launcher is ready for the next launch
    assert lx.launch(DESKTOP_ID).app.name == "Desktop"


def test_a_failing_prep_step_undoes_the_ones_before_it_and_never_starts_the_app(tmp_path):
    lx = launcher(tmp_path, {"name": "Game", "cmd": game(tmp_path),
                             "prep": [{"do": step(tmp_path, "do1"), "undo": step(tmp_path, "undo1")},
                                      {"do": ["sh", "-c", "echo no display >&2; exit 4"],
                                       "undo": step(tmp_path, "undo2")},
                                      {"do": step(tmp_path, "do3"), "undo": step(tmp_path, "undo3")}]})
    with pytest.raises(LaunchError, match=r"prep step 1 \(sh\) failed: exit 4 \(no display\)"):
        lx.launch("Game")
    assert journal(tmp_path) == ["do1", "undo1"]
    assert not (tmp_path / "marker").exists() and lx.running is None


def test_a_prep_step_that_hangs_is_killed_and_fails_the_launch(tmp_path, monkeypatch):
    monkeypatch.setattr(appsmod, "STEP_TIMEOUT_S", 0.5)
    lx = launcher(tmp_path, {"name": "Game", "cmd": game(tmp_path), "prep": [{"do": ["sleep", "30"]}]})
    with pytest.raises(LaunchError, match="still running after 0.5 s"):
        lx.launch("Game")
    assert lx.running is None


def test_a_missing_working_dir_fails_the_launch(tmp_path):
    lx = launcher(tmp_path, {"name": "Game", "cmd": game(tmp_path), "working_dir": str(tmp_path / "gone")})
    with pytest.raises(LaunchError, match="is not a directory"):
        lx.launch("Game")


def test_a_detached_app_is_started_and_not_tracked(tmp_path):
    lx = launcher(tmp_path, {"name": "Launcher", "cmd": game(tmp_path), "detached": True,
                             "prep": [{"do": step(tmp_path, "do"), "undo": step(tmp_path, "undo")}]})
    running = lx.launch("Launcher")
    assert running.proc is None and running.pid is None
    assert wait_for(lambda: (tmp_path / "marker").exists())
    pid = int((tmp_path / "marker").read_text().split()[0])
    try:
        lx.quit()
        assert journal(tmp_path) == ["do", "undo"]
        assert not group_gone(pid)  # not ours to end
    finally:
        os.killpg(pid, 9)


def test_one_app_at_a_time_even_when_two_threads_launch_at_once(tmp_path):
    lx = launcher(tmp_path, {"name": "A", "cmd": game(tmp_path), "prep": [{"do": ["sleep", "0.3"]}]},
                  {"name": "B", "cmd": ["sleep", "60"]})
    results: list[object] = []

    def go(name: str) -> None:
        try:
            results.append(lx.launch(name))
        except LaunchError as exc:
            results.append(exc)

    threads = [threading.Thread(target=go, args=(n,)) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    started = [r for r in results if not isinstance(r, LaunchError)]
    refused = [r for r in results if isinstance(r, LaunchError)]
    assert len(started) == 1 and len(refused) == 1 and "is running" in str(refused[0])
    lx.quit()
    assert group_gone(started[0].pid)


def test_ids_are_stable_across_reordering_and_restarts():
    a = [{"name": "Steam", "cmd": ["steam"]}, {"name": "Kodi", "cmd": ["kodi"]}]
    ids = {app.name: app.id for app in load_apps(a)}
    assert ids == {app.name: app.id for app in load_apps(list(reversed(a)))}
    assert ids["Desktop"] == DESKTOP_ID and ids["Steam"] not in (0, 1) and ids["Steam"] != ids["Kodi"]
    # a new process with another hash seed derives the same ids
    out = subprocess.run([sys.executable, "-c", "from punktfunk_core.apps import app_id; print(app_id('Steam'))"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True)
    assert int(out.stdout) == ids["Steam"] < 2 ** 31
    # a [[apps]] entry named Desktop configures the built-in one (keeping id 1)
    apps = load_apps([{"name": "Desktop", "prep": [{"do": ["true"]}]}])
    assert len(apps) == 1 and apps[0].id == DESKTOP_ID and apps[0].prep


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    f = tmp_path / "host.toml"
    f.write_text(text)
    return subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "config", "check", str(f)],
                          capture_output=True, text=True, timeout=60)


def test_config_check_names_each_problem_of_the_apps_list_by_key_path(tmp_path):
    r = check(tmp_path, """
[[apps]]
name = "Steam Big Picture"
cmd = ["steam", "-bigpicture"]
working_dir = "~"
env = { SDL_VIDEODRIVER = "x11" }
prep = [{ do = ["xrandr", "--output", "HDMI-1", "--mode", "1920x1080"], undo = ["xrandr", "--auto"] }]
detached = false

[[apps]]
name = "No command"

[[apps]]
name = "Typos"
cmd = "steam"
wrkdir = "/tmp"
env = { MODE = 1 }
prep = [{ undo = ["x"] }]

[[apps]]
name = "Steam Big Picture"
cmd = ["steam"]
""")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln.split(": ", 1)[1] for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [
        "apps.1.cmd: required, not given",
        "apps.2.cmd: 'steam' is not of type 'array'",
        "apps.2.env.MODE: 1 is not of type 'string'",
        "apps.2.prep.0.do: required, not given",
        "apps.2.wrkdir: unknown key (allowed: cmd, detached, env, exit_timeout, name, prep, working_dir)",
        "apps.3.name: 'Steam Big Picture' has the same name as apps.0",
    ]
    ok = check(tmp_path, '[[apps]]\nname = "Desktop"\n\n[[apps]]\nname = "Kodi"\ncmd = ["kodi"]\n')
    assert ok.returncode == 0, ok.stderr


def test_an_operator_quit_ends_the_launching_protocols_stream_first_then_the_group_then_undoes(tmp_path):
    lx = launcher(tmp_path, {"name": "Game", "cmd": game(tmp_path),
                             "prep": [{"do": step(tmp_path, "do"), "undo": step(tmp_path, "undo")}]})
    told: list[tuple[str, bool, list[str]]] = []

    def on_quit(running, reason: str) -> None:  # what a protocol does: end its stream (here: note it)
        told.append((reason, not group_gone(running.pid), journal(tmp_path)))

    running = lx.launch("Game", on_quit=on_quit, protocol="gamestream", client="laptop")
    assert wait_for(lambda: (tmp_path / "marker").exists())
    shown = lx.status()["running"]
    assert (shown["protocol"], shown["client"], shown["pgid"], shown["ending"]) == \
        ("gamestream", "laptop", running.pid, False)
    assert lx.quit_from_operator("quit by the operator") is running  # answers at once
    assert told == [("quit by the operator", True, ["do"])]  # the stream ended while the app still ran
    assert wait_for(lambda: lx.running is None)
    assert group_gone(running.pid) and journal(tmp_path) == ["do", "undo"]
    assert lx.quit_from_operator() is None and len(told) == 1


def test_an_operator_quit_of_an_app_no_protocol_launched_still_ends_it(tmp_path):
    lx = launcher(tmp_path, {"name": "Game", "cmd": game(tmp_path)})
    running = lx.launch("Game")
    assert wait_for(lambda: (tmp_path / "marker").exists())
    assert lx.status()["running"]["protocol"] is None
    assert lx.quit_from_operator() is running
    assert wait_for(lambda: lx.running is None) and group_gone(running.pid)
