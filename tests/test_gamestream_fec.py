"""GameStream FEC: both kernels reproduce the parity nanors itself produced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from punktfunk_gamestream import fec

# the reference implementation's vectors, kept with the tests (design/gamestream.md names their source)
VECTORS = Path(__file__).resolve().parent / "data" / "nanors-fec-vectors.json"


def _vectors() -> list[dict]:
    if not VECTORS.exists():
        pytest.fail(f"nanors vectors missing at {VECTORS}")
    return json.loads(VECTORS.read_text())


def _isal() -> fec.FecKernel:
    try:
        return fec.IsalKernel()
    except OSError as exc:
        pytest.skip(f"ISA-L not installed (Debian package libisal2): {exc}")


def _kernels() -> list[fec.FecKernel]:
    return [fec.NumpyKernel(), _isal()]


@pytest.mark.parametrize("kernel_name", ["numpy", "isal"])
def test_every_nanors_vector_matches(kernel_name: str) -> None:
    kernel = fec.NumpyKernel() if kernel_name == "numpy" else _isal()
    vectors = _vectors()
    assert len(vectors) >= 9
    for v in vectors:
        data = [bytes.fromhex(d) for d in v["data"]]
        assert len(data) == v["k"] and all(len(d) == v["shard_bytes"] for d in data)
        parity = fec.encode_parity(data, v["m"], kernel)
        assert [p.hex() for p in parity] == v["parity"], f"k={v['k']} m={v['m']} S={v['shard_bytes']} ({kernel.name})"


def test_best_kernel_is_isal_when_installed() -> None:
    _isal()
    assert fec.best_kernel().name == "isal"


def test_cauchy_matrix_is_nanors_shape() -> None:
    mat = fec.cauchy_matrix(4, 2)
    assert mat.shape == (2, 4)
    for j in range(2):
        for i in range(4):
            assert fec.gf_mul(int(mat[j, i]), (2 + i) ^ j) == 1
    with pytest.raises(ValueError):
        fec.cauchy_matrix(250, 10)


def test_parity_recovers_a_lost_shard_by_algebra() -> None:
    # With m=1 the single parity row is sum(c_i * d_i): removing one data
    # shard's contribution and dividing by its coefficient recovers it.
    rng = np.random.default_rng(1)
    k, size = 7, 64
    data = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(k)]
    (parity,) = fec.encode_parity(data, 1, fec.NumpyKernel())
    mat = fec.cauchy_matrix(k, 1)
    lost = 3
    acc = bytearray(parity)
    for i, d in enumerate(data):
        if i == lost:
            continue
        for b in range(size):
            acc[b] ^= fec.gf_mul(int(mat[0, i]), d[b])
    inv = fec.gf_inv(int(mat[0, lost]))
    assert bytes(fec.gf_mul(inv, x) for x in acc) == data[lost]


def test_fixed_matrix_override_matches_between_kernels() -> None:
    audio = np.array([[0x77, 0x40, 0x38, 0x0E], [0xC7, 0xA7, 0x0D, 0x6C]], dtype=np.uint8)
    rng = np.random.default_rng(2)
    buf = np.zeros((6, 120), dtype=np.uint8)
    buf[:4] = rng.integers(0, 256, (4, 120), dtype=np.uint8)
    results = []
    for kernel in _kernels():
        b = buf.copy()
        kernel.encode(b, 4, 2, audio)
        results.append(b[4:].copy())
    assert np.array_equal(results[0], results[1])
    # first parity byte by hand
    expect = 0
    for i in range(4):
        expect ^= fec.gf_mul(int(audio[0, i]), int(buf[i, 0]))
    assert results[0][0, 0] == expect


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 60), m=st.integers(1, 20), size=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_isal_and_numpy_agree(k: int, m: int, size: int, seed: int) -> None:
    isal = _isal()
    rng = np.random.default_rng(seed)
    buf = np.zeros((k + m, size), dtype=np.uint8)
    buf[:k] = rng.integers(0, 256, (k, size), dtype=np.uint8)
    a, b = buf.copy(), buf.copy()
    fec.NumpyKernel().encode(a, k, m)
    isal.encode(b, k, m)
    assert np.array_equal(a, b)
    assert np.array_equal(a[:k], buf[:k])  # data rows untouched


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError):
        fec.encode_parity([b"ab", b"abc"], 1, fec.NumpyKernel())
    isal = _isal()
    with pytest.raises(ValueError):
        isal.encode(np.zeros((3, 8), dtype=np.uint8), 3, 1)


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_isal_matches_vectors_and_numpy(threads: int) -> None:
    _isal()
    kernel = fec.IsalKernel(threads=threads)
    for v in _vectors():
        data = [bytes.fromhex(d) for d in v["data"]]
        assert [p.hex() for p in fec.encode_parity(data, v["m"], kernel)] == v["parity"]
    rng = np.random.default_rng(3)
    buf = np.zeros((212 + 43, 1408), dtype=np.uint8)
    buf[:212] = rng.integers(0, 256, (212, 1408), dtype=np.uint8)
    a, b = buf.copy(), buf.copy()
    kernel.encode(a, 212, 43)
    fec.NumpyKernel().encode(b, 212, 43)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("k,m,size", [(1, 1, 1408), (4, 2, 100), (10, 3, 1392), (76, 16, 1408), (212, 43, 1408),
                                      (200, 55, 777)])
def test_compiled_nanors_from_moonlight_writes_the_same_parity(k: int, m: int, size: int) -> None:
    """Beyond the stored vectors: the nanors that Moonlight clients link (inside
    moonlight-python's libmoonlight-common-c) encodes random blocks of many
    shapes, and both of our kernels write the same parity bytes."""
    from bench.bench_gamestream import NanorsKernel

    nanors = NanorsKernel()  # moonlight-python is a test dependency: missing means a broken install
    rng = np.random.default_rng(k * 7919 + m * 31 + size)
    data = rng.integers(0, 256, (k, size), dtype=np.uint8)
    parity = {}
    for name, kern in (("nanors", nanors), *((kern.name, kern) for kern in _kernels())):
        buf = np.zeros((k + m, size), dtype=np.uint8)
        buf[:k] = data
        kern.encode(buf, k, m)
        parity[name] = buf[k:].copy()
    nanors.close()
    assert parity["nanors"].any()
    for name, got in parity.items():
        assert np.array_equal(got, parity["nanors"]), f"{name} differs from compiled nanors for k={k} m={m}"
