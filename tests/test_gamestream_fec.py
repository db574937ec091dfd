"""GameStream FEC: every kernel reproduces the parity nanors itself produced.

"Every kernel" is numpy plus each ISA-L library found here (the pyeclib
wheel's, the system's) × each encoder variant this CPU runs, through the
compiled batch helper and through ctypes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from punktfunk_gamestream import fec

# the reference implementation's vectors, kept with the tests (design/gamestream.md names their source)
VECTORS = Path(__file__).resolve().parent / "data" / "nanors-fec-vectors.json"
NO_ISAL = "no ISA-L here (pip install pyeclib, or apt-get install libisal2)"
NO_BATCH = "punktfunk_gamestream._fec was not built (needs gcc and the Python headers at install time)"


def _vectors() -> list[dict]:
    if not VECTORS.exists():
        pytest.fail(f"nanors vectors missing at {VECTORS}")
    return json.loads(VECTORS.read_text())


def _isal() -> fec.IsalKernel:
    try:
        return fec.IsalKernel()
    except OSError as exc:
        pytest.skip(f"{NO_ISAL}: {exc}")


def _kernel_params() -> list:
    """numpy, every ISA-L library × variant (batch helper where built), and the newest through ctypes."""
    params = [pytest.param(fec.NumpyKernel, id="numpy")]
    for lib in fec.isal_libraries():
        for variant in lib.variants:
            params.append(pytest.param(lambda lib=lib, v=variant: fec.IsalKernel(library=lib, variant=v),
                                       id=f"isal-{lib.version_text.split()[0]}-{variant}"))
    if fec.isal_libraries():
        params.append(pytest.param(lambda: fec.IsalKernel(batch=False), id="isal-newest-ctypes"))
    return params


KERNELS = _kernel_params()


def _kernels() -> list[fec.FecKernel]:
    return [p.values[0]() for p in KERNELS]


@pytest.mark.parametrize("make", KERNELS)
def test_every_nanors_vector_matches(make) -> None:
    kernel = make()
    vectors = _vectors()
    assert len(vectors) >= 9
    for v in vectors:
        data = [bytes.fromhex(d) for d in v["data"]]
        assert len(data) == v["k"] and all(len(d) == v["shard_bytes"] for d in data)
        parity = fec.encode_parity(data, v["m"], kernel)
        assert [p.hex() for p in parity] == v["parity"], f"k={v['k']} m={v['m']} S={v['shard_bytes']} ({kernel.name})"


def test_an_isal_kernel_is_found_here() -> None:
    # CI installs both the pyeclib wheel (a dependency) and Debian's libisal2
    if not fec.isal_libraries():
        pytest.skip(NO_ISAL)
    assert len(KERNELS) > 2


def test_best_kernel_is_the_newest_isal_and_its_best_variant() -> None:
    libs = fec.isal_libraries()
    if not libs:
        pytest.skip(NO_ISAL)
    best = fec.best_kernel()
    assert isinstance(best, fec.IsalKernel)
    assert best.library.version == max(lib.version for lib in libs)
    assert best.variant == best.library.variants[0]
    flags = fec.cpu_flags()
    if flags is not None and "avx2" in flags:
        assert best.variant in ("avx512_gfni", "avx512", "avx2_gfni", "avx2")
    described = fec.describe()
    assert best.library.version_text in described and f"{best.variant} kernel" in described


def test_the_pinned_wheel_ships_isal_2_32_and_it_wins() -> None:
    from importlib import metadata

    try:
        metadata.version(fec.ISAL_WHEEL)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{fec.ISAL_WHEEL} is not installed (it is a dependency only on x86-64 and aarch64 Linux)")
    wheel = [lib for lib in fec.isal_libraries() if lib.source.startswith(fec.ISAL_WHEEL)]
    assert wheel, "the pyeclib wheel is installed but its ISA-L was not loaded"
    assert wheel[0].version >= (2, 32, 0)
    best = fec.best_kernel()
    assert isinstance(best, fec.IsalKernel) and best.library.version >= wheel[0].version


def test_the_batch_helper_is_built_where_it_can_be() -> None:
    can_build = shutil.which("gcc") is not None and os.path.exists(
        os.path.join(sysconfig.get_paths()["include"], "Python.h"))
    if not can_build:
        pytest.skip("no gcc or Python headers here: FEC calls ISA-L through ctypes")
    assert fec._cfec is not None, "setup.py could build punktfunk_gamestream._fec here but did not"


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
    for got in results[1:]:
        assert np.array_equal(got, results[0])
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


@settings(max_examples=40, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 80), st.integers(1, 20)), min_size=1, max_size=4),
       size=st.integers(1, 1500), seed=st.integers(0, 2**32 - 1))
def test_a_frame_of_blocks_in_one_call_matches_block_by_block(shapes: list[tuple[int, int]], size: int,
                                                              seed: int) -> None:
    """encode_blocks (one compiled call per frame) writes what one ctypes call
    per block and numpy write, block for block, and touches no data row."""
    _isal()
    blocks, row = [], 0
    for k, m in shapes:
        blocks.append((row, k, m))
        row += k + m
    rng = np.random.default_rng(seed)
    buf = rng.integers(0, 256, (row, size), dtype=np.uint8)
    results = []
    for kernel in (fec.IsalKernel(), fec.IsalKernel(batch=False), fec.NumpyKernel()):
        b = buf.copy()
        kernel.encode_blocks(b, blocks)
        results.append(b)
    for got in results[1:]:
        assert np.array_equal(got, results[0])
    for row0, k, _m in blocks:
        assert np.array_equal(results[0][row0:row0 + k], buf[row0:row0 + k])


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError):
        fec.encode_parity([b"ab", b"abc"], 1, fec.NumpyKernel())
    for kernel in (_isal(), fec.IsalKernel(batch=False)):
        with pytest.raises(ValueError):
            kernel.encode(np.zeros((3, 8), dtype=np.uint8), 3, 1)
        with pytest.raises(ValueError):
            kernel.encode_blocks(np.zeros((10, 8), dtype=np.uint8), [(0, 3, 1), (6, 3, 2)])
        with pytest.raises(ValueError):
            kernel.encode(np.zeros((8, 3), dtype=np.uint8).T, 3, 1)  # not C-contiguous
        ro = np.zeros((4, 8), dtype=np.uint8)
        ro.setflags(write=False)
        with pytest.raises(ValueError):
            kernel.encode(ro, 3, 1)


@pytest.mark.skipif(fec._cfec is None, reason=NO_BATCH)
def test_the_batch_helper_rejects_what_would_write_out_of_bounds() -> None:
    """The compiled helper checks every block against the buffer and its tables
    before it releases the GIL: bad arguments raise, nothing is written."""
    kernel = _isal()
    assert fec._cfec is not None
    enc, addr = fec._cfec.encode, kernel._encode_addr
    tables = kernel._gftbls(3, 1, None)[0]
    buf = np.zeros((4, 64), dtype=np.uint8)
    buf[:3] = 7
    bad = [
        (addr, buf, [(1, 3, 1, tables)]),           # block runs past the last row
        (addr, buf, [(-1, 3, 1, tables)]),          # negative row
        (addr, buf, [(0, 3, 1, tables[:64])]),      # tables too short for k·m
        (addr, buf, [(0, 0, 1, tables)]),           # k = 0
        (addr, buf, [(0, 200, 100, tables)]),       # more than 256 shards
        (addr, buf, [(0, 3, 1, tables)], 10, 80),   # columns past the row
        (addr, buf, [(0, 3, 1, tables)], 20, 10),   # empty range backwards
        (addr, buf.ravel(), [(0, 3, 1, tables)]),   # not 2-D
        (addr, buf.astype(np.uint16), [(0, 3, 1, tables)]),  # not bytes
        (0, buf, [(0, 3, 1, tables)]),              # no function
    ]
    for args in bad:
        with pytest.raises(ValueError):
            enc(*args)
    with pytest.raises(TypeError):
        enc(addr, buf, [(0, 3, 1)])
    with pytest.raises(TypeError):
        enc(addr, buf, 5)
    assert not buf[3].any()
    enc(addr, buf, [])  # no blocks: nothing to do
    enc(addr, buf, [(0, 3, 1, tables)])
    assert buf[3].any()


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "ctypes"])
@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_isal_matches_vectors_and_numpy(threads: int, batch: bool) -> None:
    _isal()
    if batch and fec._cfec is None:
        pytest.skip(NO_BATCH)
    kernel = fec.IsalKernel(threads=threads, batch=batch)
    for v in _vectors():
        data = [bytes.fromhex(d) for d in v["data"]]
        assert [p.hex() for p in fec.encode_parity(data, v["m"], kernel)] == v["parity"]
    rng = np.random.default_rng(3)
    for size in (1408, 777, 1409):  # large enough to be split over the threads, odd widths included
        assert 212 * 43 * size >= fec.SPLIT_MIN_WORK
        buf = np.zeros((212 + 43 + 30 + 6, size), dtype=np.uint8)
        buf[:212] = rng.integers(0, 256, (212, size), dtype=np.uint8)
        buf[255:285] = rng.integers(0, 256, (30, size), dtype=np.uint8)
        a, b = buf.copy(), buf.copy()
        kernel.encode_blocks(a, [(0, 212, 43), (255, 30, 6)])
        fec.NumpyKernel().encode_blocks(b, [(0, 212, 43), (255, 30, 6)])
        assert np.array_equal(a, b), size
    assert kernel._pool is not None  # the columns did go to helper threads
    kernel.close()


def test_a_changed_wheel_layout_falls_back_with_one_log_line(tmp_path: Path) -> None:
    """If a pyeclib release moves or drops its bundled libisal, the files list
    no longer leads to it: the host logs one line and uses the system ISA-L
    (or numpy), it does not fail. A real distribution with the pinned name and
    a files list without the library sits first on the child's sys.path."""
    dist = tmp_path / "site" / f"{fec.ISAL_WHEEL}-9.9.9.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {fec.ISAL_WHEEL}\nVersion: 9.9.9\n")
    cases = {
        "no library listed": "pyeclib/__init__.py,,\n",
        "listed but missing": "pyeclib.libs/libisal-pyeclib.so.3,,\n",
        "not a library": "pyeclib.libs/libisal-pyeclib.so.2,,\n",
    }
    code = textwrap.dedent("""
        import json, logging, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
        from punktfunk_gamestream import fec
        k = fec.best_kernel()
        print(json.dumps({"kernel": k.name, "sources": [lib.source for lib in fec.isal_libraries()]}))
    """)
    for case, record in cases.items():
        (dist / "RECORD").write_text(record)
        libs = tmp_path / "site" / "pyeclib.libs"
        shutil.rmtree(libs, ignore_errors=True)
        if case == "not a library":
            libs.mkdir()
            (libs / "libisal-pyeclib.so.2").write_bytes(b"not an ELF file")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("WARNING")]
        about_wheel = [ln for ln in warnings if fec.ISAL_WHEEL in ln]
        assert len(about_wheel) == 1, f"{case}: {warnings}"
        assert not any(s.startswith(fec.ISAL_WHEEL) for s in out["sources"]), case
        if out["sources"]:  # the system ISA-L took over quietly
            assert out["kernel"] == "isal" and warnings == about_wheel, f"{case}: {warnings}"
        else:  # nothing else: numpy, and its own warning
            assert out["kernel"] == "numpy" and len(warnings) == 2, f"{case}: {warnings}"


@pytest.mark.parametrize("k,m,size", [(1, 1, 1408), (4, 2, 100), (10, 3, 1392), (76, 16, 1408), (212, 43, 1408),
                                      (200, 55, 777)])
def test_compiled_nanors_from_moonlight_writes_the_same_parity(k: int, m: int, size: int) -> None:
    """Beyond the stored vectors: the nanors that Moonlight clients link (inside
    moonlight-python's libmoonlight-common-c) encodes random blocks of many
    shapes, and every one of our kernels writes the same parity bytes."""
    from bench.bench_gamestream import NanorsKernel

    nanors = NanorsKernel()  # moonlight-python is a test dependency: missing means a broken install
    rng = np.random.default_rng(k * 7919 + m * 31 + size)
    data = rng.integers(0, 256, (k, size), dtype=np.uint8)
    parity = {}
    kernels: list[tuple[str, NanorsKernel | fec.FecKernel]] = [("nanors", nanors), *(
        (str(i), kern) for i, kern in enumerate(_kernels()))]
    for name, kern in kernels:
        buf = np.zeros((k + m, size), dtype=np.uint8)
        buf[:k] = data
        kern.encode(buf, k, m)
        parity[name] = buf[k:].copy()
    nanors.close()
    assert parity["nanors"].any()
    for name, got in parity.items():
        assert np.array_equal(got, parity["nanors"]), f"{name} differs from compiled nanors for k={k} m={m}"


def test_the_host_reports_its_fec_kernel_in_status_and_plugins(host_factory) -> None:
    """`punktfunk gamestream status` and `punktfunk plugins` say which ISA-L
    (library, version) and which kernel variant the host encodes parity with."""
    from conftest import pf_env
    from gamestream_helpers import gs_config, wait_ready

    host = host_factory(config=gs_config())
    st = wait_ready(host)["fec"]
    best = fec.best_kernel()
    assert st["summary"] == fec.describe()
    if isinstance(best, fec.IsalKernel):
        assert st["kernel"] == "isal" and st["version"] == best.library.version_text
        assert st["variant"] == best.variant and st["library"] == best.library.path
        assert st["calls"] == ("one compiled call per frame" if fec._cfec is not None else "one ctypes call per block")
    else:
        assert st == {"kernel": "numpy", "summary": fec.describe()}
    cli = [sys.executable, "-m", "punktfunk_core.cli"]
    out = subprocess.run([*cli, "gamestream", "status"], capture_output=True, text=True, env=pf_env(host.dirs),
                         timeout=60)
    assert out.returncode == 0 and f"FEC: {fec.describe()}" in out.stdout
    plugins = subprocess.run([*cli, "plugins"], capture_output=True, text=True, timeout=60)
    row = next(ln for ln in plugins.stdout.splitlines() if ln.startswith("packetizer") and " gamestream " in ln)
    assert fec.describe() in row


def test_shard_buffers_are_cache_line_aligned() -> None:
    for rows, width in ((1, 1), (255, 1408), (7, 100)):
        buf = fec.shard_buffer(rows, width)
        assert buf.shape == (rows, width) and buf.dtype == np.uint8 and buf.flags.c_contiguous
        assert buf.ctypes.data % fec.ALIGN == 0 and not buf.any()
