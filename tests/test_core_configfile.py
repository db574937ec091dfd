"""The default config file: `serve` reads $PUNKTFUNK_CONFIG_DIR/host.toml when there is
one and says which config it runs with; `config init` writes every key at its default,
commented, owner-only, and never replaces a file. Real CLI processes."""

from __future__ import annotations

import re
import shutil
import signal
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import pf_env
from webui_helpers import run_cli_to_exit

from punktfunk_core import config as configmod
from punktfunk_core.ipc import IpcClient
from punktfunk_core.plugins import load_plugin_manager


def _init(pf_dirs: dict[str, Path], *extra: str) -> tuple[int | None, str]:
    return run_cli_to_exit(["config", "init", *extra], pf_env(pf_dirs))


def test_config_init_writes_every_key_at_its_default_owner_only_and_it_checks(pf_dirs: dict[str, Path]) -> None:
    rc, out = _init(pf_dirs)
    path = pf_dirs["config"] / "host.toml"
    assert rc == 0, out
    assert str(path) in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pf_dirs["config"].stat().st_mode) == 0o700
    rc, out = run_cli_to_exit(["config", "check"], pf_env(pf_dirs))  # no FILE: what serve reads
    assert (rc, out.strip()) == (0, f"{path}: ok")

    pm = load_plugin_manager()
    assert configmod.load(path, pm) == configmod.load(None, pm), "the written file is not exactly the defaults"
    text = path.read_text()
    schema = configmod.build_schema(pm)
    written = tomllib.loads(text)
    for section, sect in schema["properties"].items():
        if sect.get("type") == "array":  # [[apps]]: an example entry, commented out
            assert f"# [[{section}]]" in text
            continue
        for key, prop in sect["properties"].items():
            if "default" in prop:
                assert written[section][key] == prop["default"], f"{section}.{key}"
            if prop.get("description"):  # the first words of its description are its comment
                assert "# " + " ".join(prop["description"].split()[:4]) in " ".join(text.split()), f"{section}.{key}"
    # plugins' sections and the stage options are there too
    assert "[native]" in text and "[stats]" in text and "[gamestream]" in text
    assert re.search(r'#   for encoder = "x264":\n#     encoder_options = \{ preset = "ultrafast"', text)
    assert "# (integer 1 … 64; reload: now)\nmax_sessions = 4" in text
    assert "# (integer 0 … 65535; needs a restart)\nport = 47992" in text


def test_a_second_config_init_refuses_with_one_line_and_keeps_the_file(pf_dirs: dict[str, Path]) -> None:
    assert _init(pf_dirs)[0] == 0
    path = pf_dirs["config"] / "host.toml"
    path.write_text('[host]\nname = "mine"\n')
    rc, out = _init(pf_dirs)
    assert rc == 1
    assert out.strip().splitlines() == [f"punktfunk: {path} exists; not replacing it (edit it, or remove it first)"]
    assert path.read_text() == '[host]\nname = "mine"\n'
    other = pf_dirs["base"] / "elsewhere.toml"
    assert _init(pf_dirs, "--output", str(other))[0] == 0
    assert stat.S_IMODE(other.stat().st_mode) == 0o600
    assert _init(pf_dirs, "--output", str(other))[0] == 1


def test_config_check_without_a_file_checks_the_built_in_defaults(pf_dirs: dict[str, Path]) -> None:
    rc, out = run_cli_to_exit(["config", "check"], pf_env(pf_dirs))
    assert (rc, out.strip()) == (0, "built-in defaults: ok")


def _serve(args: list[str], env: dict[str, str], wrap: list[str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([*(wrap or []), sys.executable, "-m", "punktfunk_core.cli", "serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _lines_until(proc: subprocess.Popen, marker: str) -> list[str]:
    lines = []
    for line in proc.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"serve exited ({proc.wait()}) before {marker!r}:\n{''.join(lines)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_without_c_loads_host_toml_from_the_config_dir_and_says_so(pf_dirs: dict[str, Path]) -> None:
    pf_dirs["config"].mkdir(mode=0o700)
    path = pf_dirs["config"] / "host.toml"
    path.write_text('[host]\nname = "from-host-toml"\n[native]\nenabled = false\n')
    proc = _serve(["--no-console"], pf_env(pf_dirs))
    try:
        lines = _lines_until(proc, "host running")
        assert f"punktfunk config: {path}\n" in lines
        ipc = IpcClient(f"ipc://{pf_dirs['runtime'] / 'host.sock'}", timeout=2.0)
        st = ipc.call("host.status")
        ipc.close()
        assert st["hostname"] == "from-host-toml" and st["config"] == str(path) and st["protocols"] == {}
    finally:
        _stop(proc)


def test_serve_c_file_wins_over_host_toml(pf_dirs: dict[str, Path]) -> None:
    pf_dirs["config"].mkdir(mode=0o700)
    (pf_dirs["config"] / "host.toml").write_text('[host]\nname = "from-host-toml"\n')
    other = pf_dirs["base"] / "other.toml"
    other.write_text('[host]\nname = "from-c"\n[native]\nenabled = false\n')
    proc = _serve(["-c", str(other), "--no-console"], pf_env(pf_dirs))
    try:
        assert f"punktfunk config: {other}\n" in _lines_until(proc, "host running")
        ipc = IpcClient(f"ipc://{pf_dirs['runtime'] / 'host.sock'}", timeout=2.0)
        assert ipc.call("host.status")["hostname"] == "from-c"
        ipc.close()
    finally:
        _stop(proc)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is not installed")
def test_the_readmes_serve_runs_with_no_config_file_on_built_in_defaults(pf_dirs: dict[str, Path]) -> None:
    """`punktfunk serve` exactly as the README says, in a network namespace of its own:
    the default ports (native 47992, console 47990) are its own there."""
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.decode().strip()}")
    env = pf_env(pf_dirs)
    proc = _serve([], env, wrap=["unshare", "-rn", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$0" "$@"'])
    try:
        lines = _lines_until(proc, "host running")
        text = "".join(lines)
        assert f"punktfunk config: built-in defaults (no {pf_dirs['config'] / 'host.toml'})" in text
        assert "punktfunk console: http://127.0.0.1:47990/" in text
        assert "native protocol listening on 0.0.0.0:47992" in text
        assert not (pf_dirs["config"] / "host.toml").exists()  # serve never writes a config
    finally:
        _stop(proc)
    assert proc.returncode == 0
