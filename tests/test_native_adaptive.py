"""Adaptive FEC and bitrate on punktfunk/1 (docs/adaptive.md): a real host and the
real reference client, with loss and a bandwidth cap injected in the client's
receive path (``--loss``, ``--loss-until``, ``--cap-mbps``, ``--cap-until``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_native_e2e import client_cmd, client_env, start_host, summary_of

#: (start_host puts extra keys into [native]) adaptive rate control would answer the fixed
#: session's unrecoverable frames by lowering its bitrate; the loss tests compare FEC alone
FEC_ONLY = "rate_control = \"fixed\"\n"


def _samples(path: Path, session_id: int) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        s = json.loads(line)
        if s.get("session_id") == session_id:
            out.append(s["sample"])
    return out


def _pair(h, tmp_path, name: str) -> None:
    h.call("pairing.pin", protocol="native", pin="3141", seconds=120)
    proc = subprocess.run(client_cmd(h, "--pin", "3141", "--list-apps", "--json"), env=client_env(tmp_path, name),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _stream(h, tmp_path, name: str, *args: str, fps: int = 30) -> subprocess.Popen:
    cmd = client_cmd(h, "--json", "--details", "--width", "640", "--height", "360", "--fps", str(fps), *args)
    return subprocess.Popen(cmd, env=client_env(tmp_path, name), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(proc: subprocess.Popen, timeout: float = 90) -> dict:
    out, err = proc.communicate(timeout=timeout)
    return summary_of(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


@pytest.mark.slow
@pytest.mark.parametrize("loss", [0.05, 0.10])
def test_adaptive_fec_keeps_frames_whole_where_the_fixed_share_loses_some(host_factory, tmp_path, loss, figures):
    """After the first report window, at most 0.1 % of the frames are given up (the issue's goal).

    "After the first report window" starts at the first unit whose parity the host chose knowing
    a report: the host names it (``report_applied``), the client counts the frames from it on and
    those it gave up among them. Frames sent before (under the fixed start share) are not the
    controller's doing. The controller plans for a quarter of the target, so the observed count
    stays under it (about 1 frame allowed in 1 170) in nearly every run, not just on average.

    Seed 19's drop sequence at 10 % has a dense stretch near datagram 25 540 (11 of 30 lost), about
    16 s into this stream: a 20-shard frame with its 10 parity shards that lands on it is lost (seen
    in 4 of 15 runs, always the only one); the next such stretch (near 34 400) lies just past 20 s."""
    h = start_host(host_factory, tmp_path, timeout=5.0, extra=FEC_ONLY)
    _pair(h, tmp_path, "adaptive")
    _pair(h, tmp_path, "fixed")
    # small frames (600 kbit/s at 60 fps: about 1.2 kB, some 20 shards) are where a fixed share is weakest
    seed = ["--seconds", "20", "--bitrate", "600", "--loss", str(loss), "--loss-seed", "19"]
    # the same loss, the same host, at the same time: one session adaptive, one at today's fixed 20 %
    adaptive = _stream(h, tmp_path, "adaptive", *seed, fps=60)
    fixed = _stream(h, tmp_path, "fixed", *seed, "--fec", "20", fps=60)
    a, f = _finish(adaptive), _finish(fixed)
    da, df = a["details"]["after_first_report"], f["details"]["after_first_report"]
    share_a = da["frames_unrecoverable"] / max(1, da["frames_expected"])
    share_f = df["frames_unrecoverable"] / max(1, df["frames_expected"])

    def beyond(s: dict) -> int:  # drops after the last datagram that arrived are injected but not seen lost
        return max(0, s["packets_lost"] - s["details"]["injected_loss"])
    print(f"\n{loss:.0%} uniform loss, 20 s, after the first report window: adaptive "
          f"{da['frames_unrecoverable']}/{da['frames_expected']} frames unrecoverable ({share_a:.3%}), "
          f"fixed 20 % {df['frames_unrecoverable']}/{df['frames_expected']} ({share_f:.3%}); adaptive gave up "
          f"frames at {a['details']['unrecoverable_at_s']} s; counted from unit {da['from_unit']} "
          f"(adaptive) / {df['from_unit']} (fixed); datagrams lost beyond those injected (the host or the "
          f"receive path dropped them): {beyond(a)} / {beyond(f)}")
    figures(f"punktfunk/1 frames unrecoverable at {loss:.0%} loss, adaptive / fixed 20 %",
            f"{share_a:.3%} / {share_f:.3%}")
    for s in (a, f):
        assert s["details"]["injected_loss"] > 0 and s["packets_lost"] > 0, s  # the loss was real
        assert s["frames_expected"] > 300, s  # the stream ran
    assert share_a <= 0.001, a
    assert df["frames_unrecoverable"] > da["frames_unrecoverable"], (a, f)
    assert h.proc.poll() is None


@pytest.fixture
def probed_host(host_factory, tmp_path):
    def make(extra: str = ""):
        h = start_host(host_factory, tmp_path, timeout=5.0, probe=True, extra=extra)
        h.samples_path = tmp_path / "samples.jsonl"
        return h
    return make


@pytest.mark.slow
def test_parity_returns_to_the_floor_within_a_few_windows_after_the_loss_stops(probed_host, tmp_path):
    h = probed_host()
    _pair(h, tmp_path, "c")
    s = _finish(_stream(h, tmp_path, "c", "--seconds", "18", "--bitrate", "1500", "--loss", "0.10",
                        "--loss-seed", "3", "--loss-until", "6"))
    samples = _samples(h.samples_path, s["details"]["session_id"])
    shares = [x["fec_parity_pct"] for x in samples]
    estimates = [x["loss_estimate_pct"] for x in samples]
    print(f"\nparity share per 2 s window (loss 10 % until 6 s): {shares}\nloss estimate: {estimates}")
    assert len(samples) >= 7, samples
    lossy = max(shares[1:3])
    assert lossy > 25, shares  # 10 % loss raised the share from the 20 % it starts with
    # the loss ends 6 s in (in the 3rd or 4th window): within four windows the estimate is 0,
    # and the share the floor (5 % of each block, rounded up to whole shards)
    clean = next(i for i, e in enumerate(estimates) if i > 1 and e == 0.0)
    assert clean <= 3 + 4, estimates
    assert all(e == 0.0 for e in estimates[clean:]), estimates
    assert all(x < 10 for x in shares[clean + 1:]), shares


@pytest.mark.slow
def test_bitrate_settles_under_a_bandwidth_cap_and_recovers_when_it_is_lifted(probed_host, tmp_path):
    h = probed_host()
    _pair(h, tmp_path, "c")
    cap_mbps, start_kbps = 1.5, 4000
    s = _finish(_stream(h, tmp_path, "c", "--seconds", "40", "--bitrate", str(start_kbps),
                        "--cap-mbps", str(cap_mbps), "--cap-until", "22", "--loss-seed", "5"))
    samples = _samples(h.samples_path, s["details"]["session_id"])
    targets = [x["bitrate_target_kbps"] for x in samples]
    fps = [x.get("delivered_fps") for x in samples]
    print(f"\ntarget kbps per window (cap {cap_mbps} Mbit/s until 22 s): {targets}\nclient fps: {fps}")
    print("wire Mbit/s, parity %, loss estimate %:",
          [(x["mbps"], x.get("fec_parity_pct"), x.get("loss_estimate_pct")) for x in samples])
    print("why the host moved the rate:",
          [ln.split("session", 1)[-1] for ln in h.log().splitlines() if "bitrate" in ln])
    assert s["details"]["injected_cap"] > 0, s  # the cap bit
    capped = targets[5:10]  # 10..20 s: settled under the cap
    assert capped and max(capped) < cap_mbps * 1000, targets
    # 30 fps asked: once settled the picture keeps moving (a probe past the cap may cost a short
    # dip; a window without a client report has no figure)
    settled = [f for f in fps[5:11] if f is not None]
    assert len(settled) >= 4 and sum(settled) / len(settled) >= 24, fps
    assert sum(f < 20 for f in settled) <= 1, fps
    assert targets[-1] > cap_mbps * 1000, targets  # lifted: it probes back up, past what the cap allowed
    assert h.proc.poll() is None


@pytest.mark.slow
def test_fixed_keeps_todays_share_and_records_no_adaptive_fields(probed_host, tmp_path):
    h = probed_host('fec = "fixed"\nrate_control = "fixed"\n')
    _pair(h, tmp_path, "c")
    s = _finish(_stream(h, tmp_path, "c", "--seconds", "5", "--bitrate", "1500", "--loss", "0.05",
                        "--loss-seed", "2"))
    samples = _samples(h.samples_path, s["details"]["session_id"])
    assert samples and s["packets_lost"] > 0, s
    for x in samples:
        assert not {"fec_parity_pct", "loss_estimate_pct", "bitrate_target_kbps"} & set(x), x
        assert x["bitrate_kbps"] == 1500
    assert h.proc.poll() is None
