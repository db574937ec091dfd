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


def test_a_section_that_times_out_takes_the_processes_it_started_with_it(tmp_path, monkeypatch):
    # a section that starts a server in a session of its own (as bench/soundserver.py does) and hangs
    (tmp_path / "hanging_section.py").write_text(
        "import subprocess, sys, time\n"
        "def run(quick):\n"
        "    p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        f"    open({str(tmp_path / 'pid')!r}, 'w').write(str(p.pid))\n"
        "    time.sleep(300)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    from bench.cli import run_one

    res = run_one("hanging_section", quick=True, timeout=5)
    assert res == {"not_run": "timed out after 5 s"}
    pid = int((tmp_path / "pid").read_text())
    stat = Path(f"/proc/{pid}/stat")
    # gone, or a zombie waiting for init to reap it
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
