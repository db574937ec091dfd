"""The bounded JSON loader every reader of the host uses (punktfunk_core/boundedjson.py):
any input gives a value within the bounds or a JsonRefused (a ValueError) with a
reason, never a RecursionError; files are read only when they are regular files."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from punktfunk_core import boundedjson
from punktfunk_core.boundedjson import MAX_DEPTH, JsonRefused


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return all(_finite(v) for v in children)


@given(st.binary(max_size=4000))
def test_any_bytes_give_a_bounded_value_or_a_refusal(raw: bytes) -> None:
    try:
        value = boundedjson.loads(raw, max_bytes=4000)
    except JsonRefused as exc:
        assert str(exc)
        return
    assert _depth(value) <= MAX_DEPTH and _finite(value)


@given(depth=st.integers(1, 3000),
       openers=st.lists(st.sampled_from(["[", '{"k":', "[1,", '{"a":0,"b":']), min_size=1, max_size=6),
       leaf=st.sampled_from(["1", '"x"', "[]", "{}", "NaN", "-Infinity", "1e999", "2.5"]))
def test_nesting_is_accepted_up_to_the_bound_and_refused_beyond(depth: int, openers: list[str], leaf: str) -> None:
    chain = [openers[i % len(openers)] for i in range(depth)]
    doc = "".join(chain) + leaf + "".join("]" if o.startswith("[") else "}" for o in reversed(chain))
    containers = depth + (leaf in ("[]", "{}"))
    finite = leaf not in ("NaN", "-Infinity", "1e999")
    if containers <= MAX_DEPTH and finite:
        assert boundedjson.loads(doc, max_bytes=len(doc)) == json.loads(doc)
    else:
        with pytest.raises(JsonRefused, match="nested more than|not a finite number"):
            boundedjson.loads(doc, max_bytes=len(doc))


def test_a_refusal_names_where_the_problem_is() -> None:
    with pytest.raises(JsonRefused, match=r"^a/1/b: nan is not a finite number$"):
        boundedjson.loads('{"a": [1, {"b": NaN}]}', max_bytes=100)
    with pytest.raises(JsonRefused, match=r"larger than 10 bytes"):
        boundedjson.loads(b"[" + b"1," * 10 + b"1]", max_bytes=10)


def test_decode_prefix_is_bounded_like_loads() -> None:
    assert boundedjson.decode_prefix('xx{"a": [1]} tail', 2) == ({"a": [1]}, 12)
    with pytest.raises(JsonRefused, match="nested more than"):
        boundedjson.decode_prefix("x" + "[" * 100_000, 1)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device", "too large"])
def test_only_regular_files_within_the_bound_are_read_and_nothing_waits(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path.write_bytes(b"[" + b"0," * 600 + b"0]")
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="not a regular file|larger than"):
        boundedjson.load_file(path, max_bytes=1000)
    assert time.monotonic() - t0 < 1.0


def test_a_regular_file_loads_and_a_missing_one_is_file_not_found(tmp_path: Path) -> None:
    (tmp_path / "ok.json").write_text('{"a": [1, 2.5, "x"]}')
    assert boundedjson.load_file(tmp_path / "ok.json", max_bytes=100) == {"a": [1, 2.5, "x"]}
    with pytest.raises(FileNotFoundError):
        boundedjson.load_file(tmp_path / "missing.json", max_bytes=100)
