"""``python -m bench``: run the comparisons side by side and write the report."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: (name, module, one-line description) in report order
COMPARISONS: list[tuple[str, str, str]] = [
    ("runner", "bench.bench_runner", "pipeline runner overhead per frame, measurement off / on"),
    ("pipeline", "bench.bench_pipeline", "punktfunk pipeline vs GStreamer (x264, loopback UDP)"),
    ("desktop", "bench.bench_desktop", "x11 desktop capture → x264 → UDP vs GStreamer ximagesrc"),
    ("audio", "bench.bench_audio", "desktop audio (PulseAudio monitor) → Opus → UDP, GameStream and punktfunk/1, "
              "vs GStreamer pulsesrc"),
    ("measurement", "bench.bench_measurement", "cost of an armed capture on a real x264 pipeline"),
    ("fec", "bench.bench_gamestream", "GameStream GF(2^8) FEC and packetize+send"),
    ("native", "bench.bench_native", "punktfunk/1 data plane: sealed + FEC'd send rate, GSO on/off"),
    ("adaptive", "bench.bench_adaptive", "adaptive FEC: loss sweep, fixed vs adaptive, frames unrecoverable, "
                                         "keyframes, overhead"),
    ("latency", "bench.bench_latency", "host and end-to-end latency, native client and Moonlight"),
    ("input", "bench.bench_input", "input: receive → injected at 1000 events/s, its cost to the video, "
                                   "click-to-photon (punktfunk/1, xtest; test pattern)"),
    ("console", "bench.bench_console", "console under load, gunicorn 1 vs 4 workers"),
    ("stats", "bench.bench_stats", "stats recorder: push cost and listing thousands of captures"),
]

#: peers a comparison needs: name -> (how to check, how to install)
PEERS = {
    "gst-launch-1.0": "apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
                      "gstreamer1.0-plugins-ugly",
    "wrk": "apt-get install wrk",
    "Xvfb": "apt-get install xvfb gstreamer1.0-x",
    "valgrind": "apt-get install valgrind",
    "matplotlib": "pip install -e '.[bench]'",
    # the Moonlight client (latency) and compiled nanors (FEC) come from it
    "moonlight_python": "pip install -e '.[test]'",
}


def cpuinfo(field: str) -> str | None:
    """The first ``field`` line of /proc/cpuinfo ("model name", "flags"), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    cpu = cpuinfo("model name") or platform.processor() or "unknown"
    libs = {}
    for dist in ("punktfunk", "av", "numpy", "pyzmq", "flask", "gunicorn", "cryptography",
                 "reed-solomon-leopard", "pyenet", "moonlight-python", "pyeclib", "mss", "matplotlib"):
        try:
            libs[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            libs[dist] = "not installed"
    try:
        import av

        libs["ffmpeg (libavcodec)"] = ".".join(map(str, av.library_versions["libavcodec"]))
    except Exception:  # noqa: BLE001 - informational
        pass
    gst = shutil.which("gst-launch-1.0")
    if gst:
        out = subprocess.run([gst, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"GStreamer (\S+)", out)
        libs["GStreamer"] = m.group(1) if m else "present"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_flags": (cpuinfo("flags") or "").split(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "libraries": libs,
    }


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, deepest first (from /proc: no dependency for one kill)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in () may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out[::-1]


def run_one(module: str, quick: bool, timeout: float) -> dict[str, Any]:
    """Run ``module.run(quick)`` in a child process; a crash or hang costs only this section."""
    code = (
        "import json, sys, importlib\n"
        f"m = importlib.import_module({module!r})\n"
        f"r = m.run({quick!r})\n"
        "sys.stdout.write('\\n@@BENCH@@' + json.dumps(r, default=str))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=REPO, env=env)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # hosts, Xvfb and sound servers the section started (some in sessions of their own) go with it
        for pid in [*_descendants(child.pid), child.pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        child.communicate()
        return {"not_run": f"timed out after {timeout:.0f} s"}
    proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
    if "@@BENCH@@" not in proc.stdout:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        if proc.returncode != 0 and any("ModuleNotFoundError: No module named 'bench." in t for t in tail):
            return {"not_run": f"{module} is not written yet"}
        return {"not_run": "failed: " + " | ".join(tail)}
    return json.loads(proc.stdout.rsplit("@@BENCH@@", 1)[1])


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        return f"{v:.3g}" if a < 10 else f"{v:,.1f}" if a < 1000 else f"{v:,.0f}"
    return str(v)


def _normalise(result: dict[str, Any]) -> dict[str, Any]:
    """Accept the structured shape or a plain dict of numbers (see bench/__init__.py)."""
    if any(k in result for k in ("tables", "ratios", "not_run", "title")):
        return result
    tables: list[dict] = []
    ratios: list[dict] = []
    scalars: list[list[Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            headers = sorted({k for row in value for k in row},
                             key=lambda k: list(value[0]).index(k) if k in value[0] else 99)
            tables.append({"title": prefix, "headers": headers,
                           "rows": [[row.get(h) for h in headers] for row in value]})
        else:
            if "ratio" in prefix and isinstance(value, (int, float)):
                ratios.append({"name": prefix, "value": value, "target": None, "ok": None})
            scalars.append([prefix, value])

    walk("", result)
    if scalars:
        tables.insert(0, {"title": "", "headers": ["metric", "value"], "rows": scalars})
    return {"tables": tables, "ratios": ratios}


def render_plot(plot: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = plot.get("labels", [])
    series: dict[str, list] = plot.get("series", {})
    many = len(series) > 3  # then the legend goes beside the plot, where it hides no bar
    fig, ax = plt.subplots(figsize=(9.0 if many else 7.5, 4.0), dpi=110)
    n = max(1, len(series))
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        vals = [v if v is not None else 0 for v in values]
        bars = ax.bar(xs, vals, width, label=name)
        ax.bar_label(bars, labels=[_fmt(v) for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel(plot.get("ylabel", ""))
    ax.set_title(plot.get("title", ""), fontsize=10)
    if plot.get("log"):
        ax.set_yscale("log")
    if plot.get("target") is not None:
        ax.axhline(plot["target"], color="crimson", linestyle="--", linewidth=1, label="target")
    if many:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def render_markdown(results: list[tuple[str, str, dict]], machine: dict, argv: list[str], out: Path,
                    elapsed_s: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Produced by a command, not written by hand:",
        "",
        "```",
        " ".join(["python -m bench", *argv]),
        "```",
        "",
        f"Run on {_now()} in {elapsed_s:.0f} s. Every ratio compares two",
        "things measured side by side in this same run on this machine.",
        "",
    ]
    if any(res.get("measured", {}).get("date") not in (None, _now()) for _, _, res in results):
        lines += ["This run measured only some sections (`--only`); the others keep the figures of the run",
                  "named under their heading.", ""]
    lines += [
        "## Machine",
        "",
        f"- CPU: {machine['cpu']} ({machine['cores']} cores)",
        f"- CPU flags: {' '.join(machine.get('cpu_flags') or ['unknown'])}",
        f"- Load average when the run started: {' '.join(map(str, machine.get('load_average', [])))}",
        f"- OS: {machine['os']}, Python {machine['python']}",
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in machine["libraries"].items()),
        "",
    ]
    summary = [["comparison", "ratio", "value", "target", "met"]]
    for name, _desc, res in results:
        for r in res.get("ratios", []):
            summary.append([name, r["name"], _fmt(r.get("value")), r.get("target") or "–",
                            "–" if r.get("ok") is None else ("yes" if r["ok"] else "**no**")])
    if len(summary) > 1:
        lines += ["## Summary of ratios", "", *_table(summary[0], summary[1:]), ""]
    for name, desc, res in results:
        when = res.get("measured", {})
        stamp = f"; measured {when['date']} by `{when['command']}`" if when.get("date") else ""
        lines += [f"## {res.get('title') or name}", "", f"*{desc}* (`--only {name}`{stamp})", ""]
        if res.get("not_run"):
            lines += [f"Not run: {res['not_run']}", ""]
            continue
        if res.get("what"):
            lines += [res["what"], ""]
        if res.get("commands"):
            lines += ["Peer commands, exactly as run:", "", "```", *res["commands"], "```", ""]
        for t in res.get("tables", []):
            if t.get("title"):
                lines += [f"**{t['title']}**", ""]
            lines += [*_table(t["headers"], t["rows"]), ""]
        if res.get("ratios"):
            lines += [*_table(["ratio", "value", "target", "met"],
                              [[r["name"], _fmt(r.get("value")), r.get("target") or "–",
                                "–" if r.get("ok") is None else ("yes" if r["ok"] else "**no**")]
                               for r in res["ratios"]]), ""]
        if res.get("plot"):
            png = out.parent / f"bench-{name}.png"
            if render_plot(res["plot"], png):
                lines += [f"![{name}]({png.name})", ""]
        for note in res.get("notes", []):
            lines.append(f"- {note}")
        if res.get("notes"):
            lines.append("")
    return "\n".join(lines)


def _table(headers: list[Any], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short variant (under 2 minutes, used by CI)")
    p.add_argument("--only", action="append", choices=[c[0] for c in COMPARISONS],
                   help="run only this comparison (repeatable)")
    p.add_argument("--out", type=Path, default=None,
                   help="Markdown report (default docs/benchmarks.md; --quick: test-output/benchmarks-quick.md)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per comparison")
    args = p.parse_args(argv)
    out: Path = args.out or (REPO / "test-output" / "benchmarks-quick.md" if args.quick
                             else REPO / "docs" / "benchmarks.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    timeout = args.timeout or (60.0 if args.quick else 1800.0)
    missing = [f"  {peer}: install with `{how}`" for peer, how in PEERS.items()
               if not (shutil.which(peer) or _importable(peer))]
    if missing:
        print("some peers are missing; the comparisons that need them say so in the report:\n" + "\n".join(missing),
              file=sys.stderr)
    chosen = [c for c in COMPARISONS if not args.only or c[0] in args.only]
    machine = machine_info()
    results: list[tuple[str, str, dict]] = []
    t_start = time.monotonic()
    for i, (name, module, desc) in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {name}: {desc} ...", end="", flush=True, file=sys.stderr)
        t0 = time.monotonic()
        res = _normalise(run_one(module, args.quick, timeout))
        state = f"not run ({res['not_run']})" if res.get("not_run") else "done"
        print(f" {state} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        res["measured"] = {"date": _now(), "command": " ".join(["python -m bench", *argv])}
        results.append((name, desc, res))
    if args.only:
        results = _with_previous(out, results)
    elapsed = time.monotonic() - t_start
    text = render_markdown(results, machine, argv, out, elapsed)
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "run": {"date": _now(), "argv": argv},
                                                    "results": {n: r for n, _, r in results}},
                                                   indent=1, default=str))
    print(f"wrote {out}", file=sys.stderr)
    failed = [n for n, _, r in results if str(r.get("not_run", "")).startswith(("failed", "timed out"))]
    return 1 if failed else 0


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def _with_previous(out: Path, results: list[tuple[str, str, dict]]) -> list[tuple[str, str, dict]]:
    """An ``--only`` run keeps the other sections of the report it rewrites
    (from its JSON), each still marked with the run that measured it."""
    try:
        previous = json.loads(out.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return results
    run = previous.get("run") or {}
    when = run.get("date")
    if when is None:  # a report from before runs were dated in the JSON: its Markdown says when
        m = re.search(r"^Run on (.+?) in \d+ s\.", out.read_text() if out.exists() else "", re.M)
        when = m.group(1) if m else "an earlier run"
    command = " ".join(["python -m bench", *run.get("argv", [])])
    fresh = {name: (name, desc, res) for name, desc, res in results}
    merged = []
    for name, _module, desc in COMPARISONS:
        if name in fresh:
            merged.append(fresh[name])
        elif name in previous.get("results", {}):
            res = previous["results"][name]
            res.setdefault("measured", {"date": when, "command": command})
            merged.append((name, desc, res))
    return merged


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
