"""Config files: every problem gets its own line naming the key path, exit 2."""

import json
import subprocess
import sys

import pytest

from punktfunk_core import config as configmod
from punktfunk_core.plugins import load_plugin_manager


def check(tmp_path, text: str) -> subprocess.CompletedProcess:
    f = tmp_path / "host.toml"
    f.write_text(text)
    return subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "config", "check", str(f)],
                          capture_output=True, text=True, timeout=60)


def test_valid_file_passes(tmp_path):
    r = check(tmp_path, '[stream]\nwidth = 1920\nheight = 1080\nfps = 60\n')
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_empty_file_is_all_defaults(tmp_path):
    assert check(tmp_path, "").returncode == 0


@pytest.mark.parametrize("text, expected", [
    ("[stream]\nfps = 0\n", "stream.fps: 0 is less than the minimum of 1"),
    ("[stream]\ncodec = 'vp9'\n", "stream.codec: 'vp9' is not one of ['h264', 'hevc', 'av1']"),
    ("[stream]\nwidth = 'wide'\n", "stream.width: 'wide' is not of type 'integer'"),
    ("[console]\nport = 70000\n", "console.port: 70000 is greater than the maximum of 65535"),
    ("[colsole]\nport = 1\n", "colsole: unknown section"),
    ("[stream]\nfsp = 60\n", "stream.fsp: unknown key"),
    ("[stream\nfps = 60\n", "TOML syntax error"),
])
def test_each_violation_is_named_by_its_key_path(tmp_path, text, expected):
    r = check(tmp_path, text)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert expected in r.stderr, r.stderr


def test_several_problems_give_one_line_each(tmp_path):
    r = check(tmp_path, "[stream]\nfps = 0\nwidth = 17\nbitrate_kbps = -5\n[console]\nworkers = 0\n")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 4, lines
    for key in ("stream.fps", "stream.width", "stream.bitrate_kbps", "console.workers"):
        assert sum(key + ":" in ln for ln in lines) == 1, (key, lines)
    assert all(ln.startswith(str(tmp_path)) for ln in lines), "each line names the file"


def test_plugin_sections_are_validated_too(tmp_path):
    pm = load_plugin_manager()
    schema = configmod.build_schema(pm)
    plugin_sections = set(schema["properties"]) - set(configmod.CORE_SECTIONS)
    if not plugin_sections:
        pytest.skip("no plugin contributes a config section yet")
    section = sorted(plugin_sections)[0]
    r = check(tmp_path, f"[{section}]\nno_such_key_anywhere = 1\n")
    assert r.returncode == 2
    assert f"{section}.no_such_key_anywhere: unknown key" in r.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "config", "check", str(tmp_path / "nope.toml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "file not found" in r.stderr


def test_schema_command_prints_the_whole_schema_with_defaults():
    r = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "config", "schema"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert schema["properties"]["stream"]["properties"]["fps"]["default"] == 60
    assert schema["additionalProperties"] is False


def test_the_shipped_schema_has_no_test_keys():
    """Fault injection lives in test plugins (tests/plugins/), never in the shipped config."""
    schema = configmod.build_schema(load_plugin_manager())

    def keys(node, path=""):
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                yield f"{path}{name}"
                yield from keys(sub, f"{path}{name}.")
            for sub in node.values():
                if isinstance(sub, dict) and sub is not node.get("properties"):
                    yield from keys(sub, path)

    found = sorted(set(keys(schema)))
    assert "gamestream.video_sender" in found and "native.fec_percent" in found  # the walk reaches plugin sections
    assert [k for k in found if k.rsplit(".", 1)[-1].startswith("test_")] == []


def test_defaults_fill_every_core_setting():
    cfg = configmod.load(None)
    assert cfg["stream"]["capture"] == "testpattern"
    assert "console" not in cfg  # the console is a plugin: its section comes with it
    cfg = configmod.load(None, load_plugin_manager())
    assert cfg["console"]["bind"] == "127.0.0.1"
    assert cfg["console"]["workers"] == 2


@pytest.mark.parametrize("text, key", [
    ("[gamestream]\npacing = nan\n", "gamestream.pacing"),
    ("[native]\nkeepalive_timeout_s = inf\n", "native.keepalive_timeout_s"),
    ("[native]\nkeepalive_interval_s = -inf\n", "native.keepalive_interval_s"),
    ("[stream]\ncapture_options = { gain = nan }\n", "stream.capture_options.gain"),
])
def test_nan_and_inf_are_refused_naming_the_key(tmp_path, text, key):
    for r in (check(tmp_path, text), serve(tmp_path, text)):
        assert r.returncode == 2, (r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and f"{key}: " in lines[0] and "finite" in lines[0], lines


@pytest.mark.parametrize("depth", [40, 400, 5000, 100_000])
@pytest.mark.parametrize("shape", ["array", "table"])
def test_deeply_nested_toml_is_one_line_naming_the_key(tmp_path, depth, shape):
    value = "[" * depth + "]" * depth if shape == "array" else "{a = " * depth + "1" + "}" * depth
    text = f"[stream]\nwidth = 1280\ncapture_options = {{ deep = {value} }}\n"
    for r in (check(tmp_path, text), serve(tmp_path, text)):
        assert r.returncode == 2, (r.stdout, r.stderr[-2000:])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, lines[-5:]
        assert "stream.capture_options.deep" in lines[0] and "nested" in lines[0], lines
        assert "Traceback" not in r.stderr


def test_deep_table_headers_are_one_line_naming_the_key(tmp_path):
    r = check(tmp_path, "[stream.capture_options." + ".".join(["x"] * 3000) + "]\n")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(str(tmp_path)), lines[-3:]
    assert "stream.capture_options.x.x" in lines[0] and "nested" in lines[0] and len(lines[0]) < 400, lines


def test_a_fifo_nobody_writes_to_is_refused_instead_of_waited_on(tmp_path):
    import os

    fifo = tmp_path / "host.toml"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "config", "check", str(fifo)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "no data within" in r.stderr, r.stderr


def test_config_from_a_pipe_is_read(tmp_path):
    r = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "config", "check", "/dev/stdin"],
                       input="[stream]\nfps = 0\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "stream.fps: 0 is less than the minimum of 1" in r.stderr, r.stderr


def serve(tmp_path, text: str) -> subprocess.CompletedProcess:
    """`punktfunk serve` with the config: a bad one must stop it before anything starts."""
    import os

    f = tmp_path / "host.toml"
    f.write_text(text)
    env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(tmp_path / "cfg"), PUNKTFUNK_RUNTIME_DIR=str(tmp_path / "run"))
    return subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "serve", "--no-console", "-c", str(f)],
                          capture_output=True, text=True, timeout=60, env=env)


# -- stage names and stage options ------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ('[stream]\nencoder = "nvencx"\n',
     "stream.encoder: 'nvencx' is not one of ['auto', 'av1', 'hevc', 'nvenc', 'x264']"),
    ('[stream]\ncapture = "screen"\n', "stream.capture: 'screen' is not one of ['file', 'testpattern', 'x11']"),
    ('[gamestream]\naudio_source = "mic"\n',
     "gamestream.audio_source: 'mic' is not one of ['auto', 'desktop', 'tone']"),
])
def test_a_stage_name_nothing_registered_is_refused_by_check_and_serve(tmp_path, text, expected):
    for r in (check(tmp_path, text), serve(tmp_path, text)):
        assert r.returncode == 2, (r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert lines == [f"{tmp_path / 'host.toml'}: {expected}"], lines


def test_stage_options_are_checked_against_the_named_stage_one_line_per_key_path(tmp_path):
    r = check(tmp_path, '[stream]\ncapture = "x11"\ncapture_options = { monitor = 99, screen = 1 }\n'
                        'encoder = "x264"\nencoder_options = { threads = -1, tune = "film", params = { crf = 20 } }\n')
    assert r.returncode == 2
    lines = [ln.split(": ", 1)[1] for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [
        "stream.capture_options.monitor: 99 is greater than the maximum of 64",
        "stream.capture_options.screen: unknown key (allowed: converter, cursor, display, monitor, pixel_format)",
        "stream.encoder_options.threads: -1 is less than the minimum of 0",
    ], lines


def test_a_stage_whose_default_name_is_used_has_its_options_checked_too(tmp_path):
    r = check(tmp_path, "[stream]\ncapture_options = { speed = 'fast' }\n")  # capture: testpattern by default
    assert r.returncode == 2 and "stream.capture_options.speed: 'fast' is not of type 'integer'" in r.stderr, r.stderr
    r = check(tmp_path, '[stream]\ncapture = "file"\n')
    assert r.returncode == 2 and "stream.capture_options.path: required, not given" in r.stderr, r.stderr


def test_with_auto_encoder_options_must_suit_every_encoder_auto_may_pick(tmp_path):
    r = check(tmp_path, '[stream]\ncodec = "hevc"\nencoder_options = { tune = "zerolatency" }\n')
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "stream.encoder_options.tune: unknown key" in lines[0], lines
    assert 'for nvenc, which stream.encoder = "auto" may pick for hevc' in lines[0], lines
    r = check(tmp_path, '[stream]\ncodec = "hevc"\nencoder = "hevc"\nencoder_options = { tune = "zerolatency" }\n')
    assert r.returncode == 0, r.stderr  # naming the encoder gives it its own options
    r = check(tmp_path, "[stream]\nencoder_options = { vbv_frames = 2.0 }\n")
    assert r.returncode == 0, r.stderr  # an option both candidates take is fine with auto


def test_an_input_backend_nothing_registered_is_refused_by_check_and_serve(tmp_path):
    for r in (check(tmp_path, '[input]\nbackend = "evdev"\n'), serve(tmp_path, '[input]\nbackend = "evdev"\n')):
        assert r.returncode == 2, (r.stdout, r.stderr)
        lines = [ln.split(": ", 1)[1] for ln in r.stderr.splitlines() if ln.strip()]
        assert lines == ["input.backend: 'evdev' is not one of ['auto', 'none', 'uinput', 'xtest']"], lines


def test_input_backend_options_are_checked_against_the_named_backend(tmp_path):
    r = check(tmp_path, '[input]\nbackend = "uinput"\nbackend_options = { device = "", display = ":0" }\n')
    assert r.returncode == 2
    lines = [ln.split(": ", 1)[1] for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == ["input.backend_options.device: '' should be non-empty",
                     "input.backend_options.display: unknown key (allowed: device, name)"], lines
    r = check(tmp_path, '[input]\nbackend = "none"\nbackend_options = { display = ":0" }\n')
    assert r.returncode == 2 and "input.backend_options.display: unknown key (allowed: )" in r.stderr, r.stderr
    r = check(tmp_path, '[input]\nbackend = "xtest"\nbackend_options = { display = ":1" }\n')
    assert r.returncode == 0, r.stderr


def test_with_auto_input_backend_options_must_suit_every_backend_auto_may_pick(tmp_path):
    r = check(tmp_path, '[input]\nbackend_options = { name = "pad" }\n')  # backend: auto by default
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "input.backend_options.name: unknown key (allowed: display)" in lines[0], lines
    assert "for xtest, which the auto input backend may pick" in lines[0], lines


def test_a_good_config_with_stage_options_starts_serving(tmp_path):
    r = check(tmp_path, '[stream]\ncapture = "testpattern"\ncapture_options = { speed = 8, pixel_format = "nv12" }\n'
                        'encoder = "x264"\nencoder_options = { preset = "veryfast", params = { scenecut = 0 } }\n')
    assert r.returncode == 0, r.stderr


def test_schema_command_shows_each_stage_s_options_schema():
    r = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "config", "schema"],
                       capture_output=True, text=True, timeout=60)
    stream = json.loads(r.stdout)["properties"]["stream"]
    assert stream["properties"]["encoder"]["enum"] == ["auto", "av1", "hevc", "nvenc", "x264"]
    options_of = {}
    for rule in stream["allOf"]:
        for key, value in rule["if"]["properties"].items():
            if key in ("capture", "encoder") and value["const"] != "auto":
                options_of[(key, value["const"])] = rule["then"]["properties"][f"{key}_options"]
    assert options_of[("capture", "x11")]["properties"]["monitor"]["default"] == 1
    assert options_of[("encoder", "nvenc")]["properties"]["preset"]["default"] == "P1"
    assert options_of[("encoder", "x264")]["properties"]["tune"]["default"] == "zerolatency"
    assert {name for kind, name in options_of if kind == "capture"} == {"file", "testpattern", "x11"}
