"""Entry point of the stats plugin: hooks that wire the recorder to the host.

Nothing here is imported by the core or by protocol plugins: windows arrive
through the ``stats_window`` hook from every protocol (third-party ones
included), the measurement gate is armed through ``host.gate``, commands are
added with ``ipc_commands``, console routes with ``console_routes`` and the
CLI with ``cli_commands``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punktfunk_core import hookimpl
from punktfunk_core.ipc import IpcError
from punktfunk_core.settings import LIVE_NOW, Settings, setting

from punktfunk_stats.recorder import MAX_SAMPLES, Recorder
from punktfunk_stats.store import CaptureError, CaptureStore
from punktfunk_stats.summary import summarize, to_csv

log = logging.getLogger("punktfunk.stats")
perf_log = logging.getLogger("punktfunk.perf")

#: the measurement-gate consumer name of the recorder
GATE_NAME = "stats"
SECTION = "stats"


@dataclass(frozen=True, kw_only=True)
class StatsSettings(Settings):
    """Stats captures (docs/stats.md)."""

    max_samples: int = setting(MAX_SAMPLES, "windows a capture keeps; beyond it new windows are refused and "
                                            "counted (5400 = 3 h of 2 s windows)",
                               minimum=10, maximum=1_000_000, live=LIVE_NOW)


def _settings(config: dict[str, Any]) -> StatsSettings:
    return StatsSettings.of(config.get(SECTION, {}))


def captures_dir(paths: Any) -> Path:
    """Where saved captures live: ``<config dir>/captures`` (0700, made when first needed)."""
    return Path(paths.config) / "captures"


class _State:
    """The host this plugin serves (one host per process)."""

    def __init__(self) -> None:
        self.host: Any = None
        self.recorder: Recorder | None = None
        #: exceptions swallowed in stats_window (never stop a stream)
        self.errors = 0


_state = _State()


def recorder() -> Recorder | None:
    """The recorder of the host in this process (None outside a host)."""
    return _state.recorder


def _bind(host: Any) -> Recorder:
    if _state.host is host and _state.recorder is not None:
        return _state.recorder
    gate = host.gate
    _state.host = host
    _state.recorder = Recorder(
        CaptureStore(captures_dir(host.paths)),
        max_samples=_settings(host.config).max_samples,
        on_arm=lambda: gate.arm(GATE_NAME),
        on_disarm=lambda: gate.disarm(GATE_NAME),
    )
    return _state.recorder


def session_info(session: Any) -> dict[str, Any]:
    spec = session.spec
    return {
        "kind": session.kind,
        "client": session.client,
        "width": spec.width,
        "height": spec.height,
        "fps": spec.fps,
        "codec": spec.codec,
        "encoder_backend": session.encoder_backend,
        "gpu": session.gpu,
    }


# -- host-side hooks ----------------------------------------------------------------
@hookimpl
def config_schema(register: Callable[[str, dict[str, Any]], None]) -> None:
    register(SECTION, StatsSettings.schema())


@hookimpl
def config_changed(host: Any, old: dict[str, Any], new: dict[str, Any],
                   changes: dict[str, list[str]]) -> list[str] | None:
    rec = _state.recorder
    if SECTION in changes and rec is not None and _state.host is host:
        rec.max_samples = _settings(new).max_samples  # a capture already over the new limit keeps its windows
    return None


@hookimpl
def host_started(host: Any) -> None:
    _bind(host)
    if host.gate.perf:
        # the perf lines are shown whatever host.log_level says
        perf_log.setLevel(logging.INFO)
        log.info("PUNKTFUNK_PERF is set: one perf line per window per session")


@hookimpl
def host_stopping(host: Any) -> None:
    rec = _state.recorder
    if rec is None or _state.host is not host:
        return
    if rec.is_armed or rec.unsaved:
        try:
            meta = rec.stop()
            if meta is not None:
                log.info("host stopping: stats capture %s saved", meta["id"])
        except CaptureError as exc:
            log.error("host stopping: %s", exc.message)
        except Exception:  # noqa: BLE001
            log.exception("host stopping: saving the stats capture failed")


@hookimpl
def session_started(session: Any) -> None:
    rec = _state.recorder
    if rec is None or not rec.is_armed:
        return
    try:
        rec.register_session(session.id, session_info(session))
    except Exception:  # noqa: BLE001 - stats never stop a stream
        _state.errors += 1
        log.exception("stats: registering session %s failed", getattr(session, "id", "?"))


@hookimpl
def stats_window(session: Any, sample: Any) -> None:
    host = _state.host
    if host is not None and host.gate.perf:
        try:
            line = dataclasses.replace(sample, session_id=session.id).perf_line(session.kind)
            perf_log.info("%s", line)
        except Exception:  # noqa: BLE001 - stats never stop a stream
            _state.errors += 1
            log.exception("stats: perf line of session %s failed", getattr(session, "id", "?"))
    try:
        rec = _state.recorder
        if rec is not None and rec.is_armed:
            rec.push_sample(sample, session.id, session_info(session))
    except Exception:  # noqa: BLE001 - stats never stop a stream
        _state.errors += 1
        log.exception("stats: window of session %s dropped", getattr(session, "id", "?"))


# -- IPC ----------------------------------------------------------------------------
def _id_arg(args: dict[str, Any]) -> str:
    cid = args.get("id")
    return cid if isinstance(cid, str) else ""


def _since_arg(args: dict[str, Any]) -> float | None:
    since = args.get("since")
    if since is None or since == "":
        return None
    if isinstance(since, bool):
        raise IpcError(400, "since must be a number (t_ms)")
    try:
        v = float(since)
    except (TypeError, ValueError):
        raise IpcError(400, "since must be a number (t_ms)") from None
    if v != v:  # NaN
        raise IpcError(400, "since must be a number (t_ms)")
    return v


def _translated(fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    def handler(args: dict[str, Any]) -> Any:
        try:
            return fn(args)
        except CaptureError as exc:
            raise IpcError(exc.code, exc.message) from None

    handler.__name__ = getattr(fn, "__name__", "handler")
    return handler


@hookimpl
def ipc_commands(host: Any, register: Callable[..., None]) -> None:
    rec = _bind(host)
    store = rec.store

    def stop(_a: dict[str, Any]) -> Any:
        # None = nothing was recorded (the console answers 204)
        return rec.stop()

    def delete(a: dict[str, Any]) -> Any:
        store.delete(_id_arg(a))
        return {"deleted": _id_arg(a)}

    def csv_(a: dict[str, Any]) -> Any:
        cap = store.load(_id_arg(a))
        return {"id": cap["meta"]["id"], "csv": to_csv(cap)}

    commands: dict[str, Callable[[dict[str, Any]], Any]] = {
        "stats.start": lambda _a: rec.start(),
        "stats.stop": stop,
        "stats.save": lambda _a: rec.save_pending(),
        "stats.status": lambda _a: rec.status(),
        "stats.live": lambda a: rec.live(_since_arg(a)),
        "stats.list": lambda _a: store.list(),
        "stats.load": lambda a: store.load(_id_arg(a)),
        "stats.delete": delete,
        "stats.summary": lambda a: summarize(store.load(_id_arg(a))),
        "stats.csv": csv_,
    }
    for name, fn in commands.items():
        register(name, _translated(fn))


# -- console ------------------------------------------------------------------------
@hookimpl
def console_routes(register: Any, ipc: Any) -> None:
    from flask import Blueprint

    from punktfunk_stats.routes import register_routes

    register_routes(register, ipc)
    # the Performance page (static/performance.js) comes first in the console's nav
    bp = Blueprint("stats", __name__, static_folder="static")
    register.blueprint(bp)
    register.page("performance", "Performance", "performance.js", bp, order=10)


# -- CLI ------------------------------------------------------------------------------
@hookimpl
def cli_commands(subparsers: Any) -> None:
    from punktfunk_stats.cli import add_commands

    add_commands(subparsers)
