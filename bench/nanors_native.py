"""nanors compiled for this CPU (``-O3 -march=native``): a peer of the FEC benchmark.

Moonlight clients link nanors through moonlight-common-c, built for generic
x86-64 with run-time dispatch between its SSSE3/AVX2/AVX-512 variants. The
strongest nanors a machine can have is the same source compiled for the CPU
it runs on. Nothing of nanors is in this repository: at run time we download
the moonlight-python sdist from PyPI with pip (it carries
``ext/moonlight-common-c/nanors/``), unpack only that folder into
``bench/.cache/`` and compile ``rs.c`` into a shared library with the CPU's
own feature macros (nanors' ``deps/obl/autoshim.h`` turns ``__AVX512F__`` /
``__AVX2__`` / ``__SSSE3__`` into its kernel choice). The library is kept in
the cache, keyed by the sdist version, the compiler and this CPU's flags.

:func:`build` returns the library's path, or raises :class:`Unavailable`
with the reason (no compiler, no network, …) for the report.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from bench.cli import cpuinfo

CACHE = Path(__file__).resolve().parent / ".cache" / "nanors-native"
SDIST = "moonlight-python"
DEFAULT_VERSION = "0.3.0"
NANORS_DIR = "ext/moonlight-common-c/nanors/"
CFLAGS = ["-O3", "-march=native", "-fPIC", "-shared"]


class Unavailable(Exception):
    """nanors could not be built here; the message says why."""


def _version() -> str:
    try:
        return metadata.version(SDIST)
    except metadata.PackageNotFoundError:
        return DEFAULT_VERSION


def _compiler() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise Unavailable("no C compiler to build nanors -march=native (apt-get install gcc)")
    return cc


def compile_command(cc: str, src: Path, out: Path) -> list[str]:
    obl = src / "deps" / "obl"
    return [cc, *CFLAGS, "-include", str(obl / "autoshim.h"), "-I", str(obl), "-I", str(src),
            str(src / "rs.c"), "-o", str(out)]


def build() -> Path:
    """The path of libnanors built for this CPU, building it on first use."""
    cc = _compiler()
    version = _version()
    cc_id = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    key = hashlib.sha256("\n".join([version, *cc_id, cpuinfo("flags") or ""]).encode()).hexdigest()[:16]
    home = CACHE / f"{version}-{key}"
    lib = home / "libnanors-native.so"
    if lib.exists():
        return lib
    src = home / "nanors"
    if not (src / "rs.c").exists():
        _fetch(version, src)
    proc = subprocess.run(compile_command(cc, src, lib.with_suffix(".tmp")), capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise Unavailable(f"compiling nanors failed: {proc.stderr.strip()[-300:]}")
    lib.with_suffix(".tmp").rename(lib)
    return lib


def _fetch(version: str, dest: Path) -> None:
    """Download the sdist with pip and unpack its nanors folder (only) into ``dest``."""
    with tempfile.TemporaryDirectory(prefix="pf-nanors-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
               f"{SDIST}=={version}", "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"pip download of the {SDIST} {version} sdist timed out") from None
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            tail = (proc.stderr.strip().splitlines() or ["no sdist"])[-1]
            raise Unavailable(f"could not download the {SDIST} {version} sdist with pip: {tail}")
        staging = Path(tmp) / "x"
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if NANORS_DIR in m.name and (m.isfile() or m.isdir())]
            rs = next((m.name for m in members if m.name.endswith(NANORS_DIR + "rs.c")), None)
            if rs is None:
                raise Unavailable(f"the {SDIST} {version} sdist has no {NANORS_DIR}rs.c")
            tar.extractall(staging, members=members, filter="data")
        found = staging / rs[:-len("rs.c")]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(found), dest)


def describe(lib: Path) -> str:
    """The build command as run, for the report (paths relative to the cache)."""
    src = lib.parent / "nanors"
    cmd = compile_command("cc", src, lib)
    return " ".join(c.replace(str(lib.parent) + "/", "") for c in cmd)
