"""The FEC benchmark's nanors -march=native peer: built from the moonlight-python
sdist at run time, and when it cannot be built the report says why."""

from __future__ import annotations

import os

import pytest

from bench import nanors_native


def test_a_missing_compiler_is_a_reason_not_a_crash(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(nanors_native, "CACHE", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, no gcc
    with pytest.raises(nanors_native.Unavailable, match="no C compiler"):
        nanors_native.build()


def test_a_failed_download_is_a_reason_not_a_crash(monkeypatch, tmp_path) -> None:
    if nanors_native.shutil.which("cc") is None and nanors_native.shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the build stops before the download")
    monkeypatch.setattr(nanors_native, "CACHE", tmp_path)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip may not look anywhere: the download fails at once
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(nanors_native.Unavailable, match="could not download"):
        nanors_native.build()
    assert not any(tmp_path.rglob("*.so"))


def test_the_fec_report_names_the_missing_peer_and_goes_on(monkeypatch, tmp_path) -> None:
    from bench import bench_gamestream

    monkeypatch.setattr(nanors_native, "CACHE", tmp_path)
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path)]))
    notes: list[str] = []
    kernels, roles = bench_gamestream._kernels(notes)
    assert "nanors -march=native" not in kernels and "no C compiler" in roles["native_missing"]
    assert any(n.startswith("nanors -march=native not measured: no C compiler") for n in notes)
    assert "numpy" in kernels  # the rest of the run goes on
