"""``python -m bench.reliability``: the hostile-input and fault runs behind docs/reliability.md.

1. Every property test (files using hypothesis) runs with the ``fuzz`` profile:
   10 000 generated cases per property instead of the suite's few hundred.
2. The fault and load tests run once more, recording their figures.
3. The table in docs/reliability.md is written from what was measured; nothing
   in it is typed by hand.

Options: ``--quick`` (fuzz profile of 1 000 cases, for trying the command),
``--out PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
#: fault / load / security tests, each run once more with its figures recorded
FAULT_SELECT = [
    "tests/test_reliability_faults.py",
    "tests/test_reliability_load.py",
    "tests/test_reliability_loss.py",
    "tests/test_reliability_oversize.py",
    "tests/test_reliability_handshakes.py",
    "tests/test_security.py",
    "tests/test_native_e2e.py::test_silent_client_ends_session_within_keepalive_timeout",
    "tests/test_gamestream_moonlight.py::test_silent_client_times_out",
    "tests/test_stats_host.py::test_sigkill_while_saving_never_leaves_a_partial_file",
    "tests/test_webui_server.py::test_console_answers_503_within_2_s_while_the_host_is_frozen",
]
#: pairing and connection-admission attacks on both protocols: PIN guessing, pre-authentication
#: floods, strangers in a GameStream pairing, cancel from another client, idle-connection floods
PAIRING_ATTACKS = [
    "tests/test_native_pairing_attacks.py",
    "tests/test_gamestream_attacks.py",
    "tests/test_gamestream_moonlight.py::test_wrong_pin_fails_and_trusts_nothing",
]
FAULT_SELECT += PAIRING_ATTACKS


#: attacks on the console, the files the host reads back, its IPC channel, its config and
#: its processes: run on their own, reported in their own section
CONSOLE_SELECT = [
    "tests/test_reliability_console.py",
    "tests/test_core_serve.py",
    "tests/test_core_config.py",
]


def property_files() -> list[str]:
    out = []
    for p in sorted(TESTS.glob("test_*.py")):
        if re.search(r"^from hypothesis import|^import hypothesis", p.read_text(), re.M):
            out.append(str(p.relative_to(REPO)))
    return out


def run_pytest(args: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def parse_hypothesis_stats(text: str) -> list[dict]:
    """Per property test: generated cases (passing + failing + invalid), failing."""
    rows = []
    for block in re.split(r"\n(?=\S+\.py::\S+:\n)", text):
        m = re.match(r"(\S+\.py::\S+):\n", block)
        if not m:
            continue
        passing = sum(int(x) for x in re.findall(r"(\d+) passing", block))
        failing = sum(int(x) for x in re.findall(r"(\d+) failing", block))
        invalid = sum(int(x) for x in re.findall(r"(\d+) invalid", block))
        rows.append({"test": m.group(1), "cases": passing + failing + invalid, "failing": failing})
    return rows


def console_attacks(env: dict[str, str]) -> tuple[list[str], int]:
    """Run CONSOLE_SELECT once with figures; the report section and how many tests failed."""
    figures_path = Path(tempfile.mkstemp(prefix="pf-console-figures-", suffix=".jsonl")[1])
    _rc, out = run_pytest([*CONSOLE_SELECT, "-m", "slow or not slow"],
                          dict(env, PF_FIGURES=str(figures_path), HYPOTHESIS_PROFILE="default"), 3600)
    figures = [json.loads(line) for line in figures_path.read_text().splitlines() if line.strip()]
    figures_path.unlink()
    outcomes = re.findall(r"^(PASSED|FAILED|ERROR) (\S+)", out, re.M)
    failed = [t for o, t in outcomes if o != "PASSED"]
    lines = [
        "## Console, files, config and processes",
        "",
        "Foreign `Host` names (DNS rebinding), oversized and chunked bodies, JSON nested 100 000 levels deep",
        "in request bodies, IPC requests, capture files and the captures index, FIFOs where files belong,",
        "`nan`/`inf` and deep nesting in the config, short admin tokens, and every signal `serve` and",
        "`console` handle, against a real host, real gunicorn and real files (`docs/security.md`).",
        "",
        "| test | figure | value |",
        "|---|---|---|",
        *[f"| `{f['test'].split('::')[-1]}` | {f['name']} | {f['value']}{(' ' + f['unit']) if f['unit'] else ''} |"
          for f in figures],
        "",
        f"Attack tests passed: {len(outcomes) - len(failed)}; failed: {len(failed)}"
        + (" (" + ", ".join(f"`{t}`" for t in failed) + ")" if failed else "") + ".",
    ]
    return lines, len(failed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md")
    args = ap.parse_args(argv)
    figures_path = Path(tempfile.mkstemp(prefix="pf-figures-", suffix=".jsonl")[1])
    env = dict(os.environ, PF_FIGURES=str(figures_path), HYPOTHESIS_PROFILE="fuzz")
    if args.quick:
        env["PF_FUZZ_QUICK"] = "1"
    t0 = time.monotonic()
    files = property_files()
    print(f"[1/2] property tests, {len(files)} files, profile fuzz ...", file=sys.stderr, flush=True)
    rc1, out1 = run_pytest([*files, "--hypothesis-show-statistics", "-m", "not slow or slow"], env, 3600)
    stats = parse_hypothesis_stats(out1)
    print("[2/2] fault, load and security tests ...", file=sys.stderr, flush=True)
    existing = [a for a in FAULT_SELECT if (REPO / a.split("::")[0]).exists()]
    rc2, out2 = run_pytest([*existing, "-m", "slow or not slow"], dict(env, HYPOTHESIS_PROFILE="default"), 3600)
    figures = [json.loads(line) for line in figures_path.read_text().splitlines() if line.strip()]
    figures_path.unlink()
    print("[console] file, config and process attacks ...", file=sys.stderr, flush=True)
    console_section, console_failed = console_attacks(env)
    outcomes = re.findall(r"^(PASSED|FAILED|ERROR) (\S+)", out1 + out2, re.M)
    passed = sum(1 for o, _ in outcomes if o == "PASSED")
    failed = [(o, t) for o, t in outcomes if o in ("FAILED", "ERROR")]
    skipped = re.findall(r"^SKIPPED \[\d+\] (.+)$", out1 + out2, re.M)
    lines = [
        "# Reliability figures",
        "",
        "Written by `python -m bench.reliability" + (" --quick" if args.quick else "") + "` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {time.monotonic() - t0:.0f} s; do not edit by hand.",
        "How the tests work and what they guard: `docs/security.md`.",
        "",
        "## Hostile input (property-based, hypothesis profile `fuzz`)",
        "",
        "| property test | generated cases | failing |",
        "|---|---|---|",
        *[f"| `{r['test']}` | {r['cases']:,} | {r['failing']} |" for r in stats],
        "",
        f"Total: **{sum(r['cases'] for r in stats):,} cases** over {len(stats)} properties; "
        f"{sum(r['failing'] for r in stats)} failing.",
        "",
        "## Faults, load and security",
        "",
        "| test | figure | value |",
        "|---|---|---|",
        *[f"| `{f['test'].split('::')[-1]}` | {f['name']} | {f['value']}{(' ' + f['unit']) if f['unit'] else ''} |"
          for f in figures],
        "",
        "| test | outcome |",
        "|---|---|",
        *[f"| `{t}` | {o.lower()} |" for o, t in re.findall(r"^(PASSED|FAILED|ERROR) (\S+)", out2, re.M)],
        "",
        f"Tests passed: {passed}; failed: {len(failed)}; skipped: {len(skipped)}.",
    ]
    if failed:
        lines += ["", "Failed:", "", *[f"- {o} `{t}`" for o, t in failed]]
    if skipped:
        lines += ["", "Skipped (with the reason pytest gave):", "", *[f"- `{t}`" for t in skipped]]
    lines += ["", *console_section]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if not failed and not console_failed and rc1 in (0, 5) and rc2 in (0, 5) else 1


if __name__ == "__main__":
    raise SystemExit(main())
