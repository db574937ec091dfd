"""Plugin discovery through entry points: a real third-party distribution,
allow/block lists, a plugin that fails to import, duplicate stage names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_core_host import PLUGIN_DIR, UdpSink, plugin_env, read_samples, wait_no_sessions

from punktfunk_core import hookimpl
from punktfunk_core.plugins import PluginHookError, load_plugin_manager
from punktfunk_core.registry import UnknownStageError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "punktfunk-example-plugin"


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """pip-install the example plugin (its own pyproject + entry point) into a
    private site dir, as a user would install a third-party plugin."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, timeout=240,
    )
    assert list(target.glob("punktfunk_example_plugin-*.dist-info"))
    return target


def run_cli(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.update(env)
    return subprocess.run([sys.executable, "-m", "punktfunk_core.cli", *args], env=full,
                          capture_output=True, text=True, timeout=60, **kw)


def plugins_json(env: dict[str, str]) -> dict[str, dict]:
    out = run_cli(["plugins", "--json"], env)
    assert out.returncode == 0, out.stderr
    return {p["name"]: p for p in json.loads(out.stdout)}


def test_builtin_plugins_come_from_entry_points():
    table = plugins_json({})
    for name in ("media", "native", "gamestream", "stats"):
        assert table[name]["distribution"] == "punktfunk", table[name]
        assert table[name]["version"]
        assert not table[name].get("error")


def test_third_party_plugin_discovered_and_streams(example_site, host_factory, pf_dirs):
    env = {"PYTHONPATH": os.pathsep.join([str(example_site), PLUGIN_DIR])}
    table = plugins_json(env)
    ex = table["example"]
    assert ex["distribution"] == "punktfunk-example-plugin" and ex["version"] == "0.2.0"
    assert "register_stages" in ex["hooks"]

    samples = pf_dirs["base"] / "samples.jsonl"
    host_env = plugin_env(samples, PUNKTFUNK_PERF="1")
    host_env["PYTHONPATH"] = os.pathsep.join([str(example_site), PLUGIN_DIR])
    host = host_factory(config='[example]\ngreeting = "hello from a test"\n', env=host_env)
    assert "hello from a test" in host.log()  # its host_started hook ran with its own config section
    sink = UdpSink()
    try:
        host.call("sessions.loopback", port=sink.port, seconds=2.3, width=320, height=180, fps=30,
                  capture="bars", encoder="sleepy", encoder_options={"encode_ms": 0.2})
        packets, _ = sink.drain(2.5)
        wait_no_sessions(host)
    finally:
        sink.close()
    assert packets >= 30
    assert read_samples(samples), "the bars capture ran in a real, measured session"


def test_a_third_party_stage_s_options_are_checked_by_config_check(example_site, tmp_path):
    f = tmp_path / "host.toml"
    f.write_text('[stream]\ncapture = "bars"\ncapture_options = { speed = -1, colour = "red" }\n')
    r = run_cli(["config", "check", str(f)], {"PYTHONPATH": str(example_site)})
    assert r.returncode == 2, r.stderr
    assert [ln.split(": ", 1)[1] for ln in r.stderr.splitlines()] == [
        "stream.capture_options.colour: unknown key (allowed: pixel_format, speed)",
        "stream.capture_options.speed: -1 is less than the minimum of 0",
    ]
    f.write_text('[stream]\ncapture = "bars"\ncapture_options = { speed = 8 }\n')
    assert run_cli(["config", "check", str(f)], {"PYTHONPATH": str(example_site)}).returncode == 0
    r = run_cli(["config", "check", str(f)], {})  # without the plugin there is no such stage
    assert r.returncode == 2 and "stream.capture: 'bars' is not one of ['file', 'testpattern', 'x11']" in r.stderr


def test_block_list_removes_a_plugin(example_site):
    env = {"PYTHONPATH": str(example_site), "PUNKTFUNK_DISABLE_PLUGINS": "example"}
    assert "example" not in plugins_json(env)
    out = run_cli(["config", "check", "/dev/stdin"], env, input='[example]\ngreeting = "x"\n')
    assert out.returncode == 2 and "example" in out.stdout + out.stderr  # its section is unknown now


def test_allow_list_loads_only_named_plugins(example_site):
    env = {"PYTHONPATH": str(example_site), "PUNKTFUNK_LOAD_PLUGINS": "media,example"}
    assert set(plugins_json(env)) == {"media", "example"}


def test_plugin_that_fails_to_import_is_reported_and_skipped(tmp_path):
    site = tmp_path / "site"
    dist_info = site / "broken_plugin-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[punktfunk.plugins]\nbroken = broken_plugin\n")
    (site / "broken_plugin.py").write_text("raise ImportError('this plugin needs libfoo, which is missing')\n")
    env = {"PYTHONPATH": str(site)}
    table = plugins_json(env)
    assert "libfoo" in table["broken"]["error"]
    assert "media" in table and not table["media"].get("error")  # the rest loaded
    out = run_cli(["plugins"], env)
    assert out.returncode == 0 and "libfoo" in out.stdout + out.stderr


def test_duplicate_stage_name_is_an_error_naming_both(tmp_path):
    (tmp_path / "pf_dup.py").write_text(textwrap.dedent("""
        from punktfunk_core import hookimpl
        @hookimpl
        def register_stages(registry):
            registry.add("capture", "testpattern", lambda spec, opts: None)
    """))
    out = run_cli(["plugins"], {"PYTHONPATH": str(tmp_path), "PUNKTFUNK_PLUGINS": "pf_dup"})
    assert out.returncode != 0
    assert "'testpattern'" in out.stderr and "'media'" in out.stderr and "'pf_dup'" in out.stderr, out.stderr


def test_trace_switch_logs_hook_calls():
    out = run_cli(["plugins"], {"PUNKTFUNK_TRACE_PLUGINS": "1", "PUNKTFUNK_LOG_LEVEL": "info"})
    assert out.returncode == 0
    assert "hook register_stages" in out.stderr


class _Encoders:
    """A third-party plugin with two encoders of higher priority than the CPU's."""

    @hookimpl
    def register_stages(self, registry):
        registry.add("encoder", "gpuish", lambda spec, opts: None, codecs=("h264", "hevc"), priority=200,
                     available=lambda codec: "no such card here")
        registry.add("encoder", "fastish", lambda spec, opts: None, codecs=("h264",), priority=150,
                     available=lambda codec: "" if codec in (None, "h264") else "h264 only")


def test_auto_encoder_is_the_available_one_of_highest_priority_for_the_codec():
    pm = load_plugin_manager(extra=[(_Encoders(), "encoders")])
    assert pm.stages.choose("encoder", "h264").name == "fastish"  # gpuish ranks higher but cannot run here
    nvenc = pm.stages.get("encoder", "nvenc")
    hevc = pm.stages.choose("encoder", "hevc").name  # gpuish: no card; fastish: no hevc; then NVENC or the CPU's
    assert hevc == ("nvenc" if not nvenc.available("hevc") else "hevc")
    assert pm.stages.choose("packetizer").name == "chunk" and pm.stages.choose("sender").name == "udp"
    assert {"h264", "hevc", "av1"} <= pm.stages.codecs("encoder")


def test_no_available_encoder_for_a_codec_says_why_each_is_not():
    class OnlyBroken:
        @hookimpl
        def register_stages(self, registry):
            registry.add("encoder", "broken", lambda spec, opts: None, codecs=("vp9",), priority=5,
                         available=lambda codec: "libvp9 is missing")

    pm = load_plugin_manager(extra=[(OnlyBroken(), "broken")])
    with pytest.raises(UnknownStageError,
                       match=r"no encoder stage for vp9 is available here \(broken: libvp9 is missing\)"):
        pm.stages.choose("encoder", "vp9")


def test_a_probe_that_cannot_take_the_codec_is_refused_when_registered():
    class OldProbe:
        @hookimpl
        def register_stages(self, registry):
            registry.add("encoder", "oldenc", lambda spec, opts: None, available=lambda: "")

    with pytest.raises(PluginHookError, match=r"plugin 'oldprobe'.*'oldenc': available must take one argument"):
        load_plugin_manager(extra=[(OldProbe(), "oldprobe")])
