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


def test_defaults_fill_every_core_setting():
    cfg = configmod.load(None)
    assert cfg["stream"]["capture"] == "testpattern"
    assert cfg["console"]["bind"] == "127.0.0.1"
    assert cfg["console"]["workers"] == 2
