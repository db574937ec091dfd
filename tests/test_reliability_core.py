"""Hostile input for the core's parsers: config files and IPC requests.

Each property runs a few hundred cases in the normal suite and 10 000 in the
dedicated run (HYPOTHESIS_PROFILE=fuzz, see tests/conftest.py).
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from punktfunk_core import config as pfconfig
from punktfunk_core.host import Host
from punktfunk_core.paths import Paths
from punktfunk_core.plugins import load_plugin_manager

PM = load_plugin_manager()
SCHEMA = pfconfig.build_schema(PM)
SECTIONS = sorted(SCHEMA["properties"])

keys = st.one_of(st.sampled_from(["width", "height", "fps", "codec", "enabled", "port", "fec_percent", "workers",
                                  "bitrate_kbps", "encoder", "capture", "max_sessions", "bind", "x"]),
                 st.text(string.ascii_lowercase + "_", min_size=1, max_size=12))
scalars = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True), st.booleans(), st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=8)
configs = st.dictionaries(st.one_of(st.sampled_from(SECTIONS), keys),
                          st.one_of(st.dictionaries(keys, values, max_size=6), scalars), max_size=5)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), repr(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(d: dict) -> str:
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"[{json.dumps(k)}]")
            lines += [f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def _check_load(text: bytes, figures=None) -> None:
    with tempfile.NamedTemporaryFile("wb", suffix=".toml", delete=False) as f:
        f.write(text)
    try:
        cfg = pfconfig.load(f.name, PM)
    except pfconfig.ConfigError as exc:
        lines = str(exc).splitlines()
        assert lines and all(line.strip() for line in lines)
    else:
        assert set(SECTIONS) <= set(cfg)  # defaults filled for every section
    finally:
        Path(f.name).unlink()


@given(configs)
def test_structured_config_files_never_crash_the_loader(data):
    _check_load(to_toml(data).encode())


@given(st.binary(max_size=2000))
def test_random_bytes_as_config_never_crash_the_loader(raw):
    _check_load(raw)


@given(configs)
def test_every_problem_line_names_its_key_path(data):
    try:
        pfconfig.validate(SCHEMA, json.loads(json.dumps(data, default=str)))
    except pfconfig.ConfigError as exc:
        for line in exc.problems:
            assert ": " in line, line


@pytest.fixture(scope="module")
def host():
    base = Path(tempfile.mkdtemp(prefix="pf-"))
    h = Host(pfconfig.validate(SCHEMA, {}), PM, Paths(base / "cfg", base / "run"))
    h.start()
    yield h
    h.stop()


ipc_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=10)


@given(cmd=st.one_of(st.sampled_from(["host.status", "sessions.list", "sessions.stop", "sessions.loopback",
                                      "plugins.list", "host.metrics", "stats.load", "stats.delete", "stats.live",
                                      "stats.summary", "pairing.protocols", "pairing.pin", "pairing.clients",
                                      "pairing.unpair", "pairing.permissions"]), st.text(max_size=20)),
       args=ipc_json)
def test_ipc_requests_always_get_an_answer(host, cmd, args):
    raw = json.dumps({"cmd": cmd, "args": args}).encode()
    reply = host.ipc.dispatch(raw)
    assert isinstance(reply["ok"], bool)
    if not reply["ok"]:
        assert reply["code"] in (400, 404, 409, 413, 503) and reply["error"], reply
    for s in list(host.sessions.values()):  # a fuzzed loopback request may start one
        s.stop("fuzz")


@given(st.binary(max_size=500))
def test_ipc_garbage_is_counted_and_refused(host, raw):
    before = host.ipc.bad_requests
    reply = host.ipc.dispatch(raw)
    assert isinstance(reply["ok"], bool)
    if reply.get("code") == 400 and reply["error"].startswith("bad request"):
        assert host.ipc.bad_requests == before + 1
