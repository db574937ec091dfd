"""The [native] config section: defaults, validation, and the plane honouring it."""

from __future__ import annotations

import subprocess
import sys

from punktfunk_core import config as configmod
from punktfunk_core.plugins import load_plugin_manager


def test_defaults_enable_native_with_documented_values():
    cfg = configmod.load(None, load_plugin_manager())
    n = cfg["native"]
    assert n["enabled"] is True and n["port"] == 47992 and n["fec_percent"] == 20
    assert n["keepalive_timeout_s"] == 3.0 and n["gso"] is True and n["data_port"] == 0
    doc = (configmod.Path(__file__).resolve().parent.parent / "docs" / "protocol-native.md").read_text()
    for key in n:  # every key is documented in the protocol doc's config table
        assert f"| {key} |" in doc, key


def test_bad_native_values_are_one_line_each(tmp_path):
    f = tmp_path / "host.toml"
    f.write_text("[native]\nfec_percent = 400\nshard_bytes = 1201\nbogus = 1\n")
    r = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "config", "check", str(f)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert any("native.fec_percent" in x and "400" in x for x in lines), lines
    assert any("native.shard_bytes" in x for x in lines), lines
    assert any("native.bogus" in x and "unknown key" in x for x in lines), lines


def test_disabled_native_is_not_started_and_pin_says_so(host_factory):
    h = host_factory(config="[native]\nenabled = false\n")
    import time

    time.sleep(0.5)
    assert "native" not in h.call("host.status")["protocols"]
    r = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "native", "pin", "1234"], env=h.env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "not running" in r.stderr


def test_busy_port_is_a_clear_error_and_the_host_keeps_running(host_factory):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        # the console runs, so the host has something to serve (with nothing, it would exit: test_core_serve)
        h = host_factory(config=f"[native]\nbind = \"127.0.0.1\"\nport = {port}\n", console=True,
                         args=["--console-port", "0"])
        import time

        deadline = time.monotonic() + 10
        while "set native.port to a free port" not in h.log():
            assert time.monotonic() < deadline, h.log()
            time.sleep(0.1)
        assert h.call("host.status")["pid"] > 0
    finally:
        s.close()


def test_bad_adaptive_values_are_one_line_each(tmp_path):
    f = tmp_path / "host.toml"
    f.write_text('[native]\nfec = "magic"\nfec_target = 0\nfec_ceiling_percent = 500\nrate_control = "auto"\n'
                 "bitrate_min_kbps = 0\n")
    r = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "config", "check", str(f)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    for key in ("fec", "fec_target", "fec_ceiling_percent", "rate_control", "bitrate_min_kbps"):
        assert sum(f"native.{key}:" in x or f"native.{key} " in x for x in lines) == 1, (key, lines)


def test_adaptive_keys_default_to_adaptive_and_reconcile_a_floor_above_the_ceiling():
    from punktfunk_core.adaptive import policies

    cfg = configmod.load(None, load_plugin_manager())["native"]
    assert cfg["fec"] == "adaptive" and cfg["rate_control"] == "adaptive" and cfg["fec_target"] == 0.001
    fec, rate = policies({**cfg, "fec_floor_percent": 60, "fec_ceiling_percent": 40, "bitrate_min_kbps": 900,
                          "bitrate_max_kbps": 800})
    assert fec.floor_percent == fec.ceiling_percent == 40  # never refused at session start
    assert rate.max_kbps == 900
