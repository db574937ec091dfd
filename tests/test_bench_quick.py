"""`python -m bench --quick` runs in CI so the harness cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_quick_runs_every_comparison(tmp_path):
    out = tmp_path / "benchmarks.md"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[1/" in proc.stderr  # the progress line
    report = out.read_text()
    data = json.loads(out.with_suffix(".json").read_text())
    from bench.cli import COMPARISONS

    for name, _module, _desc in COMPARISONS:
        res = data["results"][name]
        assert not str(res.get("not_run", "")).startswith(("failed", "timed out")), (name, res["not_run"])
    runner = data["results"]["runner"]
    assert all(r["value"] > 0 for r in runner["ratios"])
    assert "## Machine" in report and "CPU:" in report
    assert (tmp_path / "bench-runner.png").stat().st_size > 1000
