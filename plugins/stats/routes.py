"""Management API routes of the stats plugin (prefix ``/api/v1/stats``).

Plain Flask views; each calls the host over IPC and never holds host state.
Every route is on the ``admin`` lane (admin or plugin token); none is on the
paired-device read-only lane. Errors are ``{"error": "..."}`` with the status
code the host gave (503 when the host is unreachable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, jsonify, request

from punktfunk_core.ipc import IpcError

PREFIX = "/api/v1/stats"
LANE = "admin"


def _error(exc: IpcError) -> tuple[Response, int]:
    code = exc.code if 400 <= exc.code <= 599 else 500
    return jsonify(error=exc.message), code


def _not_found() -> tuple[Response, int]:
    return jsonify(error="recording not found"), 404


def register_routes(register: Callable[..., None], ipc: Any) -> list[str]:
    """Register every stats route; returns the rules (for tests and docs)."""

    def call(cmd: str, **args: Any) -> Any:
        return ipc.call(cmd, **args)

    def stats_capture_start() -> Any:
        try:
            return jsonify(call("stats.start"))
        except IpcError as exc:
            return _error(exc)

    def stats_capture_stop() -> Any:
        try:
            meta = call("stats.stop")
        except IpcError as exc:
            return _error(exc)
        if meta is None:
            return Response(status=204)
        return jsonify(meta)

    def stats_capture_status() -> Any:
        try:
            return jsonify(call("stats.status"))
        except IpcError as exc:
            return _error(exc)

    def stats_capture_live() -> Any:
        since = request.args.get("since")
        args: dict[str, Any] = {}
        if since not in (None, ""):
            try:
                args["since"] = float(since)
            except ValueError:
                return jsonify(error="since must be a number (t_ms)"), 400
            if args["since"] != args["since"]:
                return jsonify(error="since must be a number (t_ms)"), 400
        try:
            return jsonify(call("stats.live", **args))
        except IpcError as exc:
            return _error(exc)

    def stats_recordings() -> Any:
        try:
            return jsonify(call("stats.list"))
        except IpcError as exc:
            return _error(exc)

    def stats_recording(rid: str) -> Any:
        try:
            if request.method == "DELETE":
                call("stats.delete", id=rid)
                return Response(status=204)
            return jsonify(call("stats.load", id=rid))
        except IpcError as exc:
            return _error(exc)

    def stats_recording_summary(rid: str) -> Any:
        try:
            return jsonify(call("stats.summary", id=rid))
        except IpcError as exc:
            return _error(exc)

    def stats_recording_csv(rid: str) -> Any:
        try:
            out = call("stats.csv", id=rid)
        except IpcError as exc:
            return _error(exc)
        resp = Response(out["csv"], mimetype="text/csv")
        resp.headers["Content-Disposition"] = f'attachment; filename="punktfunk-capture-{out["id"]}.csv"'
        return resp

    def stats_recording_invalid(rest: str = "") -> Any:
        # ids with "/" (also %2F) or an empty id: never a recording
        return _not_found()

    routes: list[tuple[str, Callable[..., Any], list[str]]] = [
        (f"{PREFIX}/capture/start", stats_capture_start, ["POST"]),
        (f"{PREFIX}/capture/stop", stats_capture_stop, ["POST"]),
        (f"{PREFIX}/capture/status", stats_capture_status, ["GET"]),
        (f"{PREFIX}/capture/live", stats_capture_live, ["GET"]),
        (f"{PREFIX}/recordings", stats_recordings, ["GET"]),
        (f"{PREFIX}/recordings/<rid>.csv", stats_recording_csv, ["GET"]),
        (f"{PREFIX}/recordings/<rid>/summary", stats_recording_summary, ["GET"]),
        (f"{PREFIX}/recordings/<rid>", stats_recording, ["GET", "DELETE"]),
        (f"{PREFIX}/recordings/", stats_recording_invalid, ["GET", "DELETE"]),
        (f"{PREFIX}/recordings/<path:rest>", stats_recording_invalid, ["GET", "DELETE"]),
    ]
    seen: dict[str, int] = {}
    for rule, view, methods in routes:
        # the same function may serve two rules: give each its own endpoint name
        n = seen.get(view.__name__, 0)
        seen[view.__name__] = n + 1
        if n:
            view = _renamed(view, f"{view.__name__}_{n + 1}")
        register(rule, view, methods=methods, lane=LANE)
    return [r[0] for r in routes]


def _renamed(view: Callable[..., Any], name: str) -> Callable[..., Any]:
    def wrapper(*a: Any, **kw: Any) -> Any:
        return view(*a, **kw)

    wrapper.__name__ = name
    wrapper.__qualname__ = name
    return wrapper
