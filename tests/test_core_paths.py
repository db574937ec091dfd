"""The one atomic writer: whole files or none, owner-only, replacing or never replacing."""

from __future__ import annotations

import os
import stat

import pytest

from punktfunk_core.paths import atomic_write


def test_atomic_write_writes_pieces_owner_only_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "doc.json"
    atomic_write(target, (piece for piece in (b'{"a":', b"1", b"}")), 0o600)
    assert target.read_bytes() == b'{"a":1}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    atomic_write(target, b"replaced")
    assert target.read_bytes() == b"replaced"
    assert os.listdir(tmp_path) == ["doc.json"]


def test_without_replace_an_existing_file_is_kept_and_the_writer_told(tmp_path):
    target = tmp_path / "capture.json"
    atomic_write(target, b"first", replace=False)
    with pytest.raises(FileExistsError):
        atomic_write(target, b"second", replace=False)
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["capture.json"], "the temp file of the refused write is gone"


def test_a_failing_piece_leaves_neither_file_nor_temp_file(tmp_path):
    def pieces():
        yield b"half"
        raise RuntimeError("the serializer broke")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.json", pieces(), replace=False)
    assert os.listdir(tmp_path) == []
