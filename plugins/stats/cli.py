"""``punktfunk stats``: watch, record, list, show, export and delete captures.

Every command talks to the running host over IPC. Reading (``stats``,
``list``, ``show``, ``export``) never arms a capture; ``list``, ``show`` and
``export`` read the capture files themselves when no host is running
(captures are plain files in ``<config dir>/captures``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from punktfunk_core.ipc import HostUnreachable, IpcClient, IpcError, connect
from punktfunk_core.paths import Paths

from punktfunk_stats.plugin import captures_dir
from punktfunk_stats.store import CaptureError, CaptureStore
from punktfunk_stats.summary import LOSS_LABELS, fmt_us, summarize, summary_table, to_csv


def _client() -> IpcClient:
    return connect(timeout=10.0)


class _Fail(Exception):
    pass


def _call(client: IpcClient, cmd: str, **args: Any) -> Any:
    try:
        return client.call(cmd, **args)
    except IpcError as exc:
        raise _Fail(exc.message) from None


#: reading commands that work on the files when no host runs: IPC command → local reader
_OFFLINE: dict[str, Any] = {
    "stats.list": lambda store, a: store.list(),
    "stats.load": lambda store, a: store.load(a["id"]),
    "stats.summary": lambda store, a: summarize(store.load(a["id"])),
    "stats.csv": lambda store, a: {"id": a["id"], "csv": to_csv(store.load(a["id"]))},
}


def _read(client: IpcClient, cmd: str, **args: Any) -> Any:
    """A reading command: from the host, or straight from the capture files when
    no host is running."""
    try:
        return client.call(cmd, **args)
    except HostUnreachable:
        pass
    except IpcError as exc:
        raise _Fail(exc.message) from None
    directory = captures_dir(Paths.from_env())
    print(f"punktfunk: no host is running; reading the captures in {directory}", file=sys.stderr)
    try:
        return _OFFLINE[cmd](CaptureStore(directory, prepare=False), args)
    except CaptureError as exc:
        raise _Fail(exc.message) from None


def _run(fn: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        client = _client()
        try:
            return int(fn(client, args) or 0)
        except _Fail as exc:
            print(f"punktfunk: {exc}", file=sys.stderr)
            return 1
        finally:
            client.close()

    return wrapped


def _sample_line(s: dict[str, Any]) -> str:
    stages = "  ".join(f"{st['name']} {fmt_us(st['p50_us'])}/{fmt_us(st['p99_us'])}" for st in s.get("stages", ()))
    line = (f"fps {s.get('fps', 0):.1f} (repeat {s.get('repeat_fps', 0):.1f})  {s.get('mbps', 0):.2f} Mb/s "
            f"(target {s.get('bitrate_kbps', 0)} kbps)\n    stages p50/p99: {stages}")
    if s.get("detail"):
        line += "\n    detail p50/p99: " + "  ".join(f"{st['name']} {fmt_us(st['p50_us'])}/{fmt_us(st['p99_us'])}"
                                                  for st in s["detail"])
    extra = [f"{LOSS_LABELS[k]} {s[k]}" for k in LOSS_LABELS if k in s]
    if "delivered_fps" in s:
        extra.insert(0, f"client decoded {s['delivered_fps']:.1f} fps")
    if "host_p50_us" in s:
        extra.append(f"host {fmt_us(s['host_p50_us'])}/{fmt_us(s.get('host_p99_us', 0))}")
    if "rtt_us" in s:
        extra.append(f"rtt {fmt_us(s['rtt_us'])}")
    if "input_p50_us" in s:
        extra.append(f"input receive → injected {fmt_us(s['input_p50_us'])}/{fmt_us(s.get('input_p99_us', 0))}")
    if extra:
        line += "\n    " + ", ".join(extra)
    return line


def _status_text(st: dict[str, Any], latest: dict[str, Any] | None, sessions: list[dict[str, Any]]) -> str:
    if st["armed"]:
        head = (f"recording {st.get('id', '')}: {st['sample_count']} samples, "
                f"{st['elapsed_ms'] / 1000:.0f} s, path {st['kind'] or '-'}")
    else:
        head = "idle (not recording)"
    if st.get("unsaved"):
        head += f"  [{st['unsaved']} capture(s) not saved yet: `punktfunk stats record stop` retries]"
    lines = [head, f"sessions: {len(sessions)}"]
    if latest is not None:
        lines.append(f"latest window (session {latest.get('session_id', '?')}, "
                     f"t={latest.get('t_ms', 0) / 1000:.1f} s):")
        lines.append("    " + _sample_line(latest))
    else:
        shown = False
        for s in sessions:
            if s.get("last_sample"):
                shown = True
                lines.append(f"session {s['id']} ({s['kind']}) latest window:")
                lines.append("    " + _sample_line(s["last_sample"]))
        if not shown:
            lines.append("no window yet (measurement runs while a capture is armed or PUNKTFUNK_PERF=1)")
    return "\n".join(lines)


def cmd_watch(client: IpcClient, args: argparse.Namespace) -> int:
    latest: dict[str, Any] | None = None
    since: float | None = None
    capture_id = ""
    printed = 0
    tty = sys.stdout.isatty() and not args.once
    try:
        while True:
            st = _call(client, "stats.status")
            sessions = _call(client, "sessions.list")
            if st["armed"]:
                if st.get("id") != capture_id:
                    capture_id, since, latest = st.get("id", ""), None, None
                try:
                    live = client.call("stats.live", **({"since": since} if since is not None else {}))
                    if live["samples"]:
                        latest = live["samples"][-1]
                        since = latest["t_ms"]
                except IpcError as exc:
                    if exc.code != 404:  # stopped between the two calls
                        raise _Fail(exc.message) from None
            else:
                latest, since, capture_id = None, None, ""
            if args.json:
                print(json.dumps({"status": st, "latest": latest,
                                  "sessions": [{"id": s["id"], "kind": s["kind"], "last_sample": s.get("last_sample")}
                                               for s in sessions]}), flush=True)
            else:
                text = _status_text(st, latest, sessions)
                if tty and printed:
                    sys.stdout.write(f"\x1b[{printed}F\x1b[J")
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
                printed = text.count("\n") + 1
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def cmd_record(client: IpcClient, args: argparse.Namespace) -> int:
    if args.action == "start":
        st = _call(client, "stats.start")
        if args.json:
            print(json.dumps(st))
        else:
            started = time.strftime('%H:%M:%S', time.localtime(st['started_unix_ms'] / 1000))
            print(f"recording {st.get('id', '')} (started {started}, {st['sample_count']} samples so far)")
        return 0
    meta = _call(client, "stats.stop")
    if meta is None:
        print("nothing was recording", file=sys.stderr)
        if args.json:
            print("null")
        return 0
    if args.json:
        print(json.dumps(meta))
    else:
        print(f"saved {meta['id']}: {meta['sample_count']} samples, {meta['duration_ms'] / 1000:.1f} s"
              + (" (truncated)" if meta.get("truncated") else ""))
    return 0


def cmd_list(client: IpcClient, args: argparse.Namespace) -> int:
    metas = _read(client, "stats.list")
    if args.json:
        print(json.dumps(metas, indent=2))
        return 0
    if not metas:
        print("no recordings")
        return 0
    print(f"{'id':<26} {'started':<19} {'path':<10} {'size':<16} {'codec':<6} {'encoder':<10} "
          f"{'duration':>9} {'samples':>8}")
    for m in metas:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m["started_unix_ms"] / 1000))
        size = f"{m['width']}x{m['height']}@{m['fps']}" if m.get("width") else "-"
        print(f"{m['id']:<26} {started:<19} {m.get('kind') or '-':<10} {size:<16} {m.get('codec') or '-':<6} "
              f"{m.get('encoder_backend') or '-':<10} {m['duration_ms'] / 1000:>8.1f}s {m['sample_count']:>7}"
              + ("+" if m.get("truncated") else ""))
    return 0


def cmd_show(client: IpcClient, args: argparse.Namespace) -> int:
    summary = _read(client, "stats.summary", id=args.id)
    print(json.dumps(summary, indent=2) if args.json else summary_table(summary))
    return 0


def cmd_export(client: IpcClient, args: argparse.Namespace) -> int:
    if args.csv:
        text = _read(client, "stats.csv", id=args.id)["csv"]
    else:
        text = json.dumps(_read(client, "stats.load", id=args.id), separators=(",", ":")) + "\n"
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_rm(client: IpcClient, args: argparse.Namespace) -> int:
    rc = 0
    for cid in args.ids:
        try:
            _call(client, "stats.delete", id=cid)
            print(f"deleted {cid}")
        except _Fail as exc:
            print(f"punktfunk: {cid}: {exc}", file=sys.stderr)
            rc = 1
    return rc


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("stats", help="performance stats: watch, record, list, show, export, delete captures",
                              description="Without a sub-command: show the capture status and the latest window, "
                                          "refreshing until Ctrl-C. Reading never arms a capture.")
    p.add_argument("--once", action="store_true", help="print once and exit (for scripts)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="refresh interval (default 1 s)")
    p.add_argument("--json", action="store_true", help="one JSON object per refresh")
    p.set_defaults(func=_run(cmd_watch))
    sub = p.add_subparsers(dest="stats_command", metavar="ACTION")

    r = sub.add_parser("record", help="start or stop (and save) a capture")
    r.add_argument("action", choices=["start", "stop"])
    r.add_argument("--json", action="store_true",
                   help="print the status (start) or the saved capture's meta (stop) as JSON")
    r.set_defaults(func=_run(cmd_record))

    r = sub.add_parser("list", help="saved captures, newest first")
    r.add_argument("--json", action="store_true", help="print the captures' metas as JSON")
    r.set_defaults(func=_run(cmd_list))

    r = sub.add_parser("show", help="summary table of a capture")
    r.add_argument("id", metavar="ID")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=_run(cmd_show))

    r = sub.add_parser("export", help="print a capture as JSON (default) or CSV")
    r.add_argument("id", metavar="ID")
    r.add_argument("--csv", action="store_true", help="one row per window, one column per stage and counter")
    r.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    r.set_defaults(func=_run(cmd_export))

    r = sub.add_parser("rm", help="delete captures")
    r.add_argument("ids", metavar="ID", nargs="+")
    r.set_defaults(func=_run(cmd_rm))
