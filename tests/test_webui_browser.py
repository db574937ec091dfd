"""The console in a real browser (Playwright driving Debian's chromium) against
a real host and a real gunicorn console. Screenshots of every page state go to
test-output/webui/."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from webui_helpers import UdpSink, admin_token, console_cfg, paths_of, wait_for

from punktfunk_webui import units
from punktfunk_webui.server import start_console

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"Debian chromium not installed at {CHROMIUM} (apt-get install chromium)"),
]


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def shots(output_dir: Path) -> Any:
    d = output_dir / "webui"
    d.mkdir(parents=True, exist_ok=True)

    def shot(page: Any, name: str) -> Path:
        path = d / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shot


@pytest.fixture
def stack(host_factory: Any, pf_dirs: dict[str, Path]) -> Iterator[dict[str, Any]]:
    host = host_factory()
    paths = paths_of(pf_dirs)
    console = start_console(console_cfg(workers=2), paths)
    sink = UdpSink()
    try:
        yield {"host": host, "console": console, "url": console.url, "token": admin_token(paths), "sink": sink}
    finally:
        sink.close()
        console.stop()


def _rgb(hex_colour: str) -> str:
    n = int(hex_colour.lstrip("#"), 16)
    return f"rgb({n >> 16}, {(n >> 8) & 255}, {n & 255})"


def api(stack: dict[str, Any], path: str) -> Any:
    r = requests.get(stack["url"] + path.lstrip("/"), headers={"Authorization": f"Bearer {stack['token']}"}, timeout=5)
    r.raise_for_status()
    return r.json()


def sign_in(page: Any, stack: dict[str, Any], path: str = "") -> None:
    page.goto(stack["url"] + path)
    page.wait_for_selector("#login-form", state="visible")
    page.fill("#token-input", stack["token"])
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#page:not([hidden])")


def canvas_ink(page: Any, selector: str) -> int:
    """How many pixels of the chart canvas are not blank."""
    return page.eval_on_selector(selector + " canvas", """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
        return n;
    }""")


def stream(stack: dict[str, Any], seconds: float, **kw: Any) -> dict[str, Any]:
    return stack["host"].call("sessions.loopback", port=stack["sink"].port, seconds=seconds, **kw)


def record(page: Any, stack: dict[str, Any], seconds: float, shots: Any = None, **kw: Any) -> str:
    """Start a capture in the page, stream a session, watch the live card, stop & save."""
    page.click("#capture-start")
    page.wait_for_selector("#capture-badge.rec")
    info = stream(stack, seconds, **kw)
    page.wait_for_selector("#live-card:not([hidden])")
    wait_for(lambda: int(page.text_content("#live-count") or 0) >= 1, seconds + 5, interval=0.2, what="live samples")
    first = int(page.text_content("#live-count"))
    # the live card keeps updating while the session streams (1 s windows, 2 s polls)
    wait_for(lambda: int(page.text_content("#live-count") or 0) > first, 8, interval=0.2, what="live card update")
    page.wait_for_selector("#live-latency canvas")
    assert canvas_ink(page, "#live-latency") > 500
    assert page.text_content("#capture-path") == "loopback"
    if shots:
        shots(page, "2-live-card")
    stack["sink"].drain()
    wait_for(lambda: not stack["host"].call("sessions.list"), seconds + 5, what=f"session {info['id']} to end")
    shown = page.get_attribute("#detail-card", "data-id")  # the previous capture, if one is on screen
    page.click("#capture-stop")
    page.wait_for_selector("#capture-badge.idle")
    # the detail card switches to the capture just saved (until then it may still show the last one)
    page.wait_for_function(
        """prev => { const c = document.getElementById('detail-card');
                     return !c.hidden && c.dataset.id && c.dataset.id !== prev
                            && c.querySelector('#summary-table'); }""",
        arg=shown)
    return page.get_attribute("#detail-card", "data-id")


def test_units_in_the_browser_match_the_python_reference(browser: Any, stack: dict[str, Any]) -> None:
    page = browser.new_page()
    page.goto(stack["url"])
    cases = [[fn, arg, expected] for fn, arg, expected in units.REFERENCE_CASES]
    got = page.evaluate("cases => cases.map(([fn, arg]) => PFUnits[fn](arg))", cases)
    assert got == [c[2] for c in cases]
    assert page.evaluate("PFUnits.frame_budget_us(60)") == pytest.approx(units.frame_budget_us(60))


def test_performance_page_end_to_end(browser: Any, stack: dict[str, Any], shots: Any) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    all_urls: list[str] = []
    page.on("request", lambda r: all_urls.append(r.url))
    live_urls = all_urls  # filtered below

    # sign in: a wrong token is refused, the right one opens the page; never in a URL
    page.goto(stack["url"])
    page.wait_for_selector("#login-form", state="visible")
    shots(page, "0-login")
    page.fill("#token-input", "wrong-token-wrong-token")
    page.click("#login-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('login-error').textContent.includes('not valid')")
    sign_in(page, stack)
    assert stack["token"] not in page.url
    page.wait_for_selector("#capture-badge.idle")
    assert page.text_content("#capture-badge") == "Idle"
    shots(page, "1-idle")

    # capture 1: a 30 fps session
    first = record(page, stack, 7, shots, width=320, height=180, fps=30)
    assert any("/capture/live?since=" in u for u in live_urls), "the live card must poll incrementally with ?since="
    wait_for(lambda: canvas_ink(page, "#detail-latency") > 2000, 5, what="latency chart drawn")
    assert canvas_ink(page, "#detail-throughput") > 2000
    # the loopback path records send drops, so the health chart is drawn
    assert page.query_selector("#detail-health canvas") is not None
    # summary numbers in the page are the API's, formatted per the spec
    summary = api(stack, f"/api/v1/stats/recordings/{first}/summary")
    assert summary["stages"] and summary["detail"]
    for st in summary["stages"] + summary["detail"]:
        for key in ("p50_us", "p95_us", "median_p99_us", "max_p99_us"):
            cell = page.text_content(f'#summary-table tr[data-stage="{st["name"]}"] td[data-key="{key}"]')
            assert cell == units.format_us(st[key]), (st["name"], key, cell, st[key])
    # the table says what is aggregated over what
    caption = page.text_content("#summary-table caption")
    windows = max(st["windows"] for st in summary["stages"])
    assert f"over {windows} windows" in caption and "p50 and p99 of its frames" in caption, caption
    heads = page.text_content("#summary-table thead")
    assert "p50 of the frames, over windows" in heads and "p99 of the frames, over windows" in heads, heads
    fps = summary["fps"]
    assert page.text_content("#sum-fps") == f"{units.format_fps(fps['min'])} / {units.format_fps(fps['mean'])}"
    # durations keep their tenths (a 7 s capture is not cut to "7 s" when it ran 7.4 s)
    meta = api(stack, "/api/v1/stats/recordings")[0]
    assert page.text_content(f'#recordings-table tr[data-id="{first}"] td:nth-child(7)') \
        == units.format_duration_ms(meta["duration_ms"])
    assert re.fullmatch(r"\d+\.\d s", units.format_duration_ms(meta["duration_ms"]))
    # the latency axis reaches at least 1.2 × the 30 fps budget
    y_max = page.evaluate("document.querySelector('#detail-latency').pfChart.scales.y.max")
    assert y_max >= 1.2 * 1_000_000 / 30 - 1
    assert page.get_attribute("#detail-latency", "data-mode") == "stacked"
    # an idle legend names the lines, with no time and no dashes in it
    idle_time = page.eval_on_selector("#detail-latency .u-legend .u-series:first-child",
                                      "e => getComputedStyle(e).display")
    assert idle_time == "none"
    assert "\u2013" not in page.inner_text("#detail-latency .u-legend"), page.inner_text("#detail-latency .u-legend")
    # throughput: the encoder target is its own colour and dash, and never sits on the fps line
    thr = page.evaluate("""(() => { const c = document.querySelector('#detail-throughput').pfChart;
        const by = Object.fromEntries(c.series.map((s, i) => [s.label, i]));
        const f = by['fps (host sent)'], t = by['target Mb/s (encoder)'];
        return {fpsStroke: c.series[f]._stroke, targetStroke: c.series[t]._stroke, dash: c.series[t].dash,
                fps: c.data[f], target: c.data[t], fpsMax: c.scales.fps.max, mbpsMax: c.scales.mbps.max}; })()""")
    assert thr["fpsStroke"] != thr["targetStroke"] and thr["dash"], thr
    heights = [(a / thr["fpsMax"], b / thr["mbpsMax"])
               for a, b in zip(thr["fps"], thr["target"], strict=True) if a and b]
    assert heights and all(abs(a - b) > 0.05 for a, b in heights), heights
    shots(page, "3-detail-p50")
    page.click('#detail-card .segmented button[data-q="p99"]')
    page.wait_for_selector('#detail-card .segmented button[data-q="p99"][aria-pressed="true"]')
    assert canvas_ink(page, "#detail-latency") > 2000
    # p99s do not add up: the p99 view draws each stage and the host total as lines of their own, and says why
    assert page.get_attribute("#detail-latency", "data-mode") == "lines"
    assert "p99s do not add up" in page.text_content("#detail-latency-note")
    lines = page.evaluate("""(() => { const c = document.querySelector('#detail-latency').pfChart;
        return c.series.map((s, i) => [s.label, c.data[i]]); })()""")
    labels = [label for label, _ in lines]
    assert "host total p99 (per frame)" in labels, labels
    cap1 = api(stack, f"/api/v1/stats/recordings/{first}")
    encode_p99 = [next(st["p99_us"] for st in x["stages"] if st["name"] == "encode") for x in cap1["samples"]]
    assert dict(lines)["encode p99"] == encode_p99  # the stage's own p99, not stacked on the ones below
    shots(page, "4-detail-p99")

    # capture 2: a different mode, then compare the two
    second = record(page, stack, 6, width=256, height=144, fps=60)
    assert second != first
    rows = page.query_selector_all("#recordings-table tbody tr[data-id]")
    assert [r.get_attribute("data-id") for r in rows] == [second, first]  # newest first
    assert "256\u00d7144@60" in rows[0].inner_text() and "x264" in rows[0].inner_text()
    assert page.get_attribute(f'#recordings-table tr[data-id="{second}"] td.encoder', "title") == "no GPU"
    page.check(f'#recordings-table tr[data-id="{first}"] input.pick')
    page.check(f'#recordings-table tr[data-id="{second}"] input.pick')
    page.click("#compare-btn")
    page.wait_for_selector("#compare-card:not([hidden]) #compare-table")
    wait_for(lambda: canvas_ink(page, "#compare-latency") > 2000, 5, what="compare chart drawn")
    sa = api(stack, f"/api/v1/stats/recordings/{first}/summary")
    sb = api(stack, f"/api/v1/stats/recordings/{second}/summary")
    enc_a = next(s for s in sa["stages"] if s["name"] == "encode")
    enc_b = next(s for s in sb["stages"] if s["name"] == "encode")
    row = '#compare-table tr[data-stage="encode"][data-q="p50"]'
    assert page.text_content(f'{row} td[data-side="a"]') == units.format_us(enc_a["p50_us"])
    assert page.text_content(f'{row} td[data-side="b"]') == units.format_us(enc_b["p50_us"])
    delta = page.text_content(f'{row} td[data-side="delta"]')
    assert delta[0] in "+\u2212\u00b1" and units.format_us(abs(enc_b["p50_us"] - enc_a["p50_us"])) in delta
    fps_row = '#compare-table tr[data-stage="fps (host)"][data-q="mean"]'
    assert page.text_content(f'{fps_row} td[data-side="b"]') == units.format_fps(sb["fps"]["mean"])
    # A and B have colours of their own, the same in the tags and in the chart
    tag_a = page.eval_on_selector("#compare-card .tag.a", "e => getComputedStyle(e).backgroundColor")
    tag_b = page.eval_on_selector("#compare-card .tag.b", "e => getComputedStyle(e).backgroundColor")
    strokes = page.evaluate("document.querySelector('#compare-latency').pfChart.series.slice(1, 3).map(s => s._stroke)")
    assert tag_a != tag_b and strokes[0] != strokes[1], (tag_a, tag_b, strokes)
    assert [_rgb(x) for x in strokes] == [tag_a, tag_b]
    # the frame budget is inside the axis when it is drawn; when it is far above the values, the note says so
    for stage in page.eval_on_selector_all("#compare-card .stage-pick button", "bs => bs.map(b => b.dataset.stage)"):
        for q in ("p50", "p99"):
            page.click(f'#compare-card .stage-pick button[data-stage="{stage}"]')
            page.click(f'#compare-card .card-head .segmented button[data-q="{q}"]')
            budget_state = page.get_attribute("#compare-latency", "data-budget")
            y_max = page.evaluate("document.querySelector('#compare-latency').pfChart.scales.y.max")
            if budget_state == "drawn":
                assert y_max >= 1_000_000 / 60, (stage, q, y_max)
            else:
                assert budget_state == "far above" and "is far above these values" in page.text_content("#compare-note")
    page.eval_on_selector("#compare-card", "e => e.scrollIntoView()")
    shots(page, "5-compare")

    # downloads: JSON and CSV come through the API with the bearer header
    with page.expect_download() as dl:
        page.click(f'#recordings-table tr[data-id="{first}"] button.csv')
    csv_text = Path(dl.value.path()).read_text()
    assert csv_text.startswith("t_ms,session_id,fps")
    with page.expect_download() as dl:
        page.click(f'#recordings-table tr[data-id="{first}"] button.json')
    assert '"samples"' in Path(dl.value.path()).read_text()

    # delete with confirmation: cancel keeps it, confirm removes it
    page.click(f'#recordings-table tr[data-id="{second}"] button.delete')
    page.wait_for_selector("dialog#confirm[open]")
    shots(page, "6-delete-confirm")
    page.click("dialog#confirm .confirm-cancel")
    assert len(api(stack, "/api/v1/stats/recordings")) == 2
    page.click(f'#recordings-table tr[data-id="{second}"] button.delete')
    page.wait_for_selector("dialog#confirm[open]")
    page.click("dialog#confirm .confirm-ok")
    page.wait_for_selector(f'#recordings-table tr[data-id="{second}"]', state="detached")
    assert [m["id"] for m in api(stack, "/api/v1/stats/recordings")] == [first]
    shots(page, "7-after-delete")
    # a phone-sized window: the page reflows and the charts follow their container
    page.set_viewport_size({"width": 390, "height": 844})
    page.click(f'#recordings-table tr[data-id="{first}"] button.view')
    page.wait_for_selector("#detail-latency canvas")
    wait_for(lambda: page.evaluate("document.querySelector('#detail-latency').pfChart.width") <= 390, 5,
             what="chart resized to the phone width")
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    # and every table fits: nothing is cut off behind a scroll edge
    shots(page, "11-phone")
    cut = page.evaluate("""[...document.querySelectorAll('#page table.data')].filter(t => t.offsetParent)
        .filter(t => t.scrollWidth > t.parentElement.clientWidth + 1)
        .map(t => [t.id || t.className, t.scrollWidth, t.parentElement.clientWidth])""")
    assert cut == [], cut
    assert errors == []
    # the token travelled only in headers: never in any URL the page requested
    assert len(all_urls) > 50
    assert not [u for u in all_urls if stack["token"] in u]


def test_sessions_host_and_pairing_pages(browser: Any, stack: dict[str, Any], shots: Any) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    stack["host"].call("stats.start")  # measurement windows carry the session's fps and Mb/s
    info = stream(stack, 20, width=320, height=180, fps=30)
    sign_in(page, stack, "sessions")
    page.wait_for_selector(f'#sessions-table tr[data-id="{info["id"]}"]')
    # the fps / Mb/s cells fill in from the session's first window
    wait_for(lambda: page.text_content(f'#sessions-table tr[data-id="{info["id"]}"] td.fps') != units.NO_VALUE, 8,
             interval=0.2, what="measured fps in the sessions table")
    assert 20 < float(page.text_content(f'#sessions-table tr[data-id="{info["id"]}"] td.fps')) < 40
    assert page.text_content(f'#sessions-table tr[data-id="{info["id"]}"] td.mbps').endswith("Mb/s")
    row = page.inner_text(f'#sessions-table tr[data-id="{info["id"]}"]')
    assert "loopback" in row and "320\u00d7180@30" in row and "h264" in row
    shots(page, "8-sessions")
    page.click(f'#sessions-table tr[data-id="{info["id"]}"] button.end')
    page.click("dialog#confirm .confirm-ok")
    page.wait_for_selector(f'#sessions-table tr[data-id="{info["id"]}"]', state="detached", timeout=8000)
    assert stack["host"].call("sessions.list") == []

    # the token stays in this tab's session storage across pages
    page.click('nav a[href="/host"]')
    page.wait_for_selector("#plugins-table")
    page.wait_for_selector("#routes-table")
    assert "stats" in page.inner_text("#plugins-table")
    assert "/api/v1/stats/capture/start" in page.inner_text("#routes-table")
    shots(page, "9-host")

    page.click('nav a[href="/pairing"]')
    page.wait_for_selector("#tokens-card")
    protocols = stack["host"].call("host.status")["protocols"]
    if "native" in protocols:  # the native plugin's PIN route, found in the console's route table
        assert protocols["native"]["pairing_open"] is False
        page.fill('#pair-native input[name="pin"]', "4821")
        page.click('#pair-native button[type="submit"]')
        wait_for(lambda: stack["host"].call("host.status")["protocols"]["native"]["pairing_open"], 5,
                 what="native pairing open")
        page.wait_for_selector("#pair-native .clients h3")
        # status facts read as words with their unit: "pairing expires in 1 min 58 s", not "… in s 118.0"
        page.reload()
        page.wait_for_selector('#pair-native .fact[data-key="pairing_expires_in_s"]')
        fact = '#pair-native .fact[data-key="pairing_expires_in_s"]'
        assert page.text_content(f"{fact} dt") == "pairing expires in"
        assert re.fullmatch(r"[12] min \d\d s", page.text_content(f"{fact} dd")), page.text_content(f"{fact} dd")
        assert page.text_content('#pair-native .fact[data-key="pairing_open"] dd') == "yes"
    # GameStream is off on this host (opt-in): its card says how to turn it on and offers no PIN entry
    if "gamestream" not in protocols:
        page.wait_for_selector("#pair-gamestream .protocol-off")
        assert "--gamestream" in page.text_content("#pair-gamestream .protocol-off")
        assert page.query_selector('#pair-gamestream input[name="pin"]') is None
    page.fill('#tokens-card input[name="name"]', "tablet")
    page.click('#tokens-card button[type="submit"]')
    page.wait_for_selector("#tokens-card code.token")
    device_token = page.text_content("#tokens-card code.token").strip()
    who = requests.get(stack["url"] + "api/v1/whoami", headers={"Authorization": f"Bearer {device_token}"}, timeout=5)
    assert who.json()["role"] == "device"
    shots(page, "10-pairing")

    # signing out forgets the token
    page.click("#logout")
    page.wait_for_selector("#login-form", state="visible")
    assert page.evaluate("sessionStorage.length") == 0
    # the device token gets in, read-only: no console page, only the device facts
    page.fill("#token-input", device_token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#device-card .proto-status")
    assert "tablet" in page.inner_text("#device-card")
    assert page.query_selector("#tokens-card") is None
    assert errors == []


def _native_like_capture(cid: str, started: int, counters: bool, unrecoverable: int = 0) -> dict[str, Any]:
    """A saved capture of a path that measures round trip, the sealing split, the
    client's loss counters and decoded rate, with a second session starting half-way."""
    samples = []
    for i in range(12):
        s: dict[str, Any] = {
            "t_ms": 2000 * (i + 1), "session_id": 3 if i < 6 else 4, "window_ms": 2000,
            "stages": [{"name": n, "p50_us": p, "p99_us": p * 2.5} for n, p in
                       (("capture", 900.0 + 10 * i), ("encode", 4500.0 + 40 * i), ("queue", 20.0), ("send", 650.0))],
            "detail": [{"name": "encode.submit", "p50_us": 300.0, "p99_us": 700.0},
                       {"name": "encode.receive", "p50_us": 4200.0 + 40 * i, "p99_us": 9000.0}],
            "fps": 59.9, "repeat_fps": 0.5, "mbps": 19.5 + i / 10, "bitrate_kbps": 20000,
            "host_p50_us": 6100.0, "host_p99_us": 9800.0,
            "rtt_us": 1800.0 + 50 * i, "fec_us": 120.0, "seal_us": 80.0, "sock_us": 210.0,
        }
        if counters:  # FEC repairs every lost packet, except where frames are lost for good
            s.update(frames_dropped=0, packets_dropped=230 * (i % 3), send_dropped=0, fec_recovered=230 * (i % 3),
                     frames_unrecoverable=unrecoverable if i == 5 else 0,
                     delivered_fps=59.9 - (10 if i == 5 and unrecoverable else 0))
            # adaptive FEC and rate control: parity up with the loss, the target stepping down and back
            s.update(fec_parity_pct=6.2 + 20 * (i % 3), loss_estimate_pct=3.0 * (i % 3),
                     bitrate_target_kbps=20000 - 2000 * (i % 3))
            if 2 <= i <= 8:  # the client's input in some windows (the others have none: no input fields)
                s.update(input_events=500, input_dropped=0, input_p50_us=180.0 + i, input_p99_us=400.0 + 10 * i)
        samples.append(s)
    meta = {"id": cid, "started_unix_ms": started, "duration_ms": 24000, "kind": "native", "width": 1920,
            "height": 1080, "fps": 60, "codec": "hevc", "client": "ab12cd34", "sample_count": len(samples),
            "encoder_backend": "nvenc", "gpu": "NVIDIA RTX 4070", "truncated": False}
    return {"meta": meta, "samples": samples}


def test_detail_of_a_native_capture_shows_every_chart(browser: Any, host_factory: Any, pf_dirs: dict[str, Path],
                                                       shots: Any) -> None:
    import json

    captures = pf_dirs["config"] / "captures"
    captures.mkdir(parents=True, mode=0o700, exist_ok=True)
    now = int(time.time() * 1000)
    for cid, started, counters, lost in (("native-a", now - 60_000, True, 0), ("native-b", now - 30_000, False, 0),
                                         ("native-c", now - 90_000, True, 3)):
        (captures / f"{cid}.json").write_text(json.dumps(_native_like_capture(cid, started, counters, lost)))
        os.chmod(captures / f"{cid}.json", 0o600)
    host = host_factory()
    paths = paths_of(pf_dirs)
    console = start_console(console_cfg(workers=1), paths)
    try:
        stack = {"host": host, "url": console.url, "token": admin_token(paths)}
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in(page, stack)
        page.wait_for_selector('#recordings-table tr[data-id="native-a"]')
        row = '#recordings-table tr[data-id="native-a"]'
        assert page.get_attribute(f"{row} td.encoder", "title") == "GPU: NVIDIA RTX 4070"
        assert "1920\u00d71080@60" in page.inner_text('#recordings-table tr[data-id="native-a"]')
        page.click('#recordings-table tr[data-id="native-a"] button.view')
        page.wait_for_selector("#detail-card:not([hidden]) #summary-table")
        for chart in ("#detail-latency", "#detail-throughput", "#detail-health", "#detail-rtt", "#detail-sealing"):
            wait_for(lambda c=chart: page.query_selector(c + " canvas") and canvas_ink(page, c) > 1000, 5, what=chart)
        # one break between the two sessions: a null row in the latency data
        xs = page.evaluate("document.querySelector('#detail-latency').pfChart.data[1].filter(v => v === null).length")
        assert xs == 1
        labels = page.evaluate("document.querySelector('#detail-health').pfChart.series.map(s => s.label)")
        assert {"packets lost (client)", "recovered by FEC (client)", "frames unrecoverable (client)"} <= set(labels)
        # adaptive FEC on the health chart against a percent axis of its own; its target on the throughput chart
        pct = page.evaluate("""(() => { const c = document.querySelector('#detail-health').pfChart;
            return c.series.filter(s => s.scale === 'pct').map(s => s.label); })()""")
        assert pct == ["FEC parity % (adaptive)", "loss estimate % (adaptive)"], pct
        assert page.query_selector("#adaptive-hint") is not None
        steered = page.evaluate("""(() => { const c = document.querySelector('#detail-throughput').pfChart;
            const i = c.series.findIndex(s => s.label === 'adaptive target Mb/s');
            return i < 0 ? null : [c.series[i].scale, c.data[i].filter(v => v !== null)]; })()""")
        assert steered is not None and steered[0] == "mbps" and max(steered[1]) == 20.0, steered
        assert page.text_content('#summary-table tr[data-stage="host total"] td[data-key="p50_us"]') == "6.1 ms"
        assert page.get_attribute('#summary-table tr[data-stage="encode.receive"]', "class") == "detail"
        # the budget line at 1000/60 ms, axis at least 1.2 × budget
        assert "16.7 ms" in page.inner_text("#detail-latency")
        # the client's decoded rate is drawn next to the host's, and summed up next to it
        thr = page.evaluate("document.querySelector('#detail-throughput').pfChart.series.map(s => s.label)")
        assert "fps (host sent)" in thr and "fps (client decoded)" in thr, thr
        assert page.text_content("#sum-delivered") == "59.9 / 59.9"
        # FEC repaired every lost packet: lost, recovered and unrecoverable are shown apart, and nothing is red
        assert page.text_content("#sum-packets_dropped") == page.text_content("#sum-fec_recovered") == "2,760"
        assert page.text_content("#sum-frames_unrecoverable") == "0"
        assert page.query_selector("#summary-facts .fact.bad") is None
        # input latency: a chart of its own, and the medians of the windows' p50 and p99 that had input
        wait_for(lambda: page.query_selector("#detail-input canvas") and canvas_ink(page, "#detail-input") > 1000, 5,
                 what="#detail-input")
        assert page.text_content("#sum-input") == "185 \u00b5s / 450 \u00b5s"
        lines = page.evaluate("document.querySelector('#detail-input').pfChart.series.map(s => s.label)")
        assert "input p50" in lines and "input p99" in lines, lines
        assert "drops" not in page.inner_text("#summary-facts").lower()
        shots(page, "12-native-detail")
        # frames lost for good are the number in red
        page.click('#recordings-table tr[data-id="native-c"] button.view')
        page.wait_for_function("() => document.getElementById('detail-card').dataset.id === 'native-c'")
        page.wait_for_selector("#summary-facts .fact.bad")
        assert page.text_content("#summary-facts .fact.bad dt") == "frames unrecoverable (client)"
        assert page.text_content("#sum-frames_unrecoverable") == "3"
        page.click('#recordings-table tr[data-id="native-b"] button.view')
        page.wait_for_selector("#no-loss-counters")
        assert page.text_content("#no-loss-counters") == "This path records no loss counters."
        assert page.text_content("#sum-loss") == "none on this path"
        assert page.query_selector("#detail-input") is None and page.query_selector("#sum-input") is None
        # fixed FEC and rate: no adaptive lines anywhere
        thr = page.evaluate("document.querySelector('#detail-throughput').pfChart.series.map(s => s.label)")
        assert "adaptive target Mb/s" not in thr and page.query_selector("#adaptive-hint") is None
        shots(page, "13-no-loss-counters")
        assert errors == []
    finally:
        console.stop()


def test_a_stopped_host_is_said_plainly_and_the_controls_go_off(browser: Any, stack: dict[str, Any], shots: Any,
                                                               host_factory: Any) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, stack)
    page.wait_for_selector("#capture-badge.idle")
    assert page.is_enabled("#capture-start") and page.is_hidden("#host-gone")
    stack["host"].stop()
    # the console is still up, the host is not: a banner says so and Start is off (no stale page with a small pill)
    page.wait_for_selector("#host-gone:not([hidden])", timeout=10_000)
    assert "The host is not running" in page.text_content("#host-gone")
    assert page.text_content("#host-badge") == "host not running"
    assert not page.is_enabled("#capture-start") and not page.is_enabled("#recordings-card button")
    shots(page, "14-host-gone")
    # the host comes back: the banner goes, the controls come back
    host_factory()
    page.wait_for_selector("#host-gone", state="hidden", timeout=10_000)
    assert page.is_enabled("#capture-start")
    # the console itself goes away: that is said too
    stack["console"].stop()
    page.wait_for_selector("#host-gone:not([hidden])", timeout=10_000)
    assert "The console does not answer" in page.text_content("#host-gone")
    assert not page.is_enabled("#capture-start")


def test_the_reload_button_reloads_the_config_file_and_shows_what_it_did(browser: Any, stack: dict[str, Any],
                                                                         shots: Any) -> None:
    host = stack["host"]
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, stack, "host")
    wait_for(lambda: page.text_content("#config-file") == str(host.config_path), 10, interval=0.2,
             what="the config file on the Host page")
    good = host.config_path.read_text()
    host.config_path.write_text(good + '[stats]\nmax_samples = 123\n[console]\nport = 1\n')
    page.click("#config-reload")
    page.wait_for_selector("#config-reload-result .applied")
    assert page.inner_text("#config-reload-result .applied") == "applied: stats.max_samples"
    assert page.inner_text("#config-reload-result .needs-restart") == "needs a restart: console.port"
    assert host.call("stats.status")["max_samples"] == 123
    shots(page, "15-config-reload")

    host.config_path.write_text(good + "[stats]\nmax_samples = 1\n")  # below its minimum
    page.click("#config-reload")
    page.wait_for_selector("#config-reload-result .refused")
    assert page.inner_text("#config-reload-result .refused") == \
        f"{host.config_path}: stats.max_samples: 1 is less than the minimum of 10"
    assert host.call("stats.status")["max_samples"] == 123
    assert not errors, errors


def test_the_apps_card_shows_the_apps_and_the_running_one_and_quit_ends_it(browser: Any, host_factory: Any,
                                                                           pf_dirs: dict[str, Path], shots: Any,
                                                                           tmp_path: Path) -> None:
    pytest.importorskip("moonlight_python")
    from gamestream_helpers import group_alive, gs_config, launch_marker_app, marker_app

    host = host_factory(config=gs_config(apps=(marker_app(tmp_path),)))
    paths = paths_of(pf_dirs)
    console = start_console(console_cfg(workers=2), paths)
    try:
        stack = {"url": console.url, "token": admin_token(paths)}
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in(page, stack, "host")
        page.wait_for_selector("#apps-table tr[data-app='Marker']")
        assert page.inner_text("#apps-running") == "No app is running."
        assert not page.is_enabled("#apps-quit")
        assert "sh -c" in page.inner_text("#apps-table tr[data-app='Marker']")

        pgid = launch_marker_app(host, tmp_path)  # a real Moonlight launch through GameStream
        page.wait_for_selector("#apps-table tr[data-app='Marker'].running .badge", timeout=10_000)
        assert page.locator("#apps-table tr.running").count() == 1
        text = page.inner_text("#apps-running")
        assert text.startswith("Marker runs since ") and "launched by gamestream" in text, text
        assert f"process group {pgid}" in text, text
        wait_for(lambda: page.is_enabled("#apps-quit"), 10, interval=0.2, what="Quit to be enabled")
        shots(page, "16-apps-running")

        page.click("#apps-quit")
        page.wait_for_selector("dialog#confirm[open]")
        page.click("dialog#confirm .confirm-ok")
        page.wait_for_selector("#apps-result .applied")
        assert page.inner_text("#apps-result .applied").startswith("quitting Marker: its stream ended")
        wait_for(lambda: not group_alive(pgid), 10, what="the app's process group to end")
        wait_for(lambda: (tmp_path / "undone").exists(), 10, what="the undo step")
        wait_for(lambda: page.inner_text("#apps-running") == "No app is running.", 10, interval=0.2,
                 what="the card to show no running app")
        assert page.locator("#apps-table tr.running").count() == 0 and not page.is_enabled("#apps-quit")
        shots(page, "17-apps-quit")

        host.stop()  # the host goes: the card says why it cannot tell, Quit stays off
        page.wait_for_selector("#host-gone:not([hidden])", timeout=10_000)
        wait_for(lambda: "not reachable" in page.inner_text("#apps-running"), 10, interval=0.2,
                 what="the apps card to say the host is gone")
        assert not page.is_enabled("#apps-quit")
        assert not errors, errors
    finally:
        console.stop()
