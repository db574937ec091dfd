"""Where punktfunk keeps things, and owner-only file helpers.

config dir   $PUNKTFUNK_CONFIG_DIR or $XDG_CONFIG_HOME/punktfunk (~/.config/punktfunk), 0700
runtime dir  $PUNKTFUNK_RUNTIME_DIR or $XDG_RUNTIME_DIR/punktfunk or /tmp/punktfunk-$UID, 0700

Parents the host has to create for either are 0700 too, whatever the umask.
Files the host reads back are opened with :func:`read_regular_file`: a FIFO,
device or oversized file in their place is refused at once, never waited on.
"""

from __future__ import annotations

import errno
import os
import secrets
import select
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def config_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("PUNKTFUNK_CONFIG_DIR"):
        return Path(env["PUNKTFUNK_CONFIG_DIR"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "punktfunk"


def runtime_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("PUNKTFUNK_RUNTIME_DIR"):
        return Path(env["PUNKTFUNK_RUNTIME_DIR"])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "punktfunk"
    return Path(tempfile.gettempdir()) / f"punktfunk-{os.getuid()}"


class FileRefused(ValueError):
    """A file the host reads back is not a regular file or is too large."""


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; never blocks.

    Opened non-blocking, so a FIFO in its place does not wait for a writer;
    anything but a regular file, or a larger one, raises :class:`FileRefused`.
    OSError (FileNotFoundError, PermissionError …) passes through.
    """
    return _read(path, max_bytes, pipe_wait_s=0.0)


def read_file_or_pipe(path: str | os.PathLike[str], max_bytes: int, wait_s: float) -> bytes:
    """Like :func:`read_regular_file`, but a pipe or FIFO (``/dev/stdin``,
    ``<(…)``) is read too, as long as data keeps coming within ``wait_s``:
    a FIFO nobody writes to is refused after that, not waited on forever."""
    return _read(path, max_bytes, pipe_wait_s=wait_s)


def _read(path: str | os.PathLike[str], max_bytes: int, pipe_wait_s: float) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        is_pipe = stat.S_ISFIFO(st.st_mode) and pipe_wait_s > 0
        if not stat.S_ISREG(st.st_mode) and not is_pipe:
            raise FileRefused(f"{os.fspath(path)} is not a regular file")
        if st.st_size > max_bytes:
            raise FileRefused(f"{os.fspath(path)} is larger than {max_bytes} bytes")
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        chunks: list[bytes] = []
        total = 0
        while True:  # a regular file may have grown since fstat: read to its end, never past the bound
            if is_pipe and not poller.poll(int(pipe_wait_s * 1000)):
                raise FileRefused(f"{os.fspath(path)} gave no data within {pipe_wait_s:.0f} s "
                                  "(a FIFO nobody writes to?)")
            try:
                chunk = os.read(fd, max(st.st_size - total, 0) + 65536)
            except BlockingIOError:  # a pipe with a writer but no data yet
                continue
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > max_bytes:
                raise FileRefused(f"{os.fspath(path)} is larger than {max_bytes} bytes")
            chunks.append(chunk)
    finally:
        os.close(fd)


def _make_private_parents(path: Path) -> None:
    """mkdir -p with mode 0700 for each directory created (not the umask's 0777)."""
    missing: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # mkdir's mode is masked by the umask; 0700 whatever the umask was


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents, all 0700) and make it 0700, refusing one owned by someone else."""
    _make_private_parents(Path(path))
    st = path.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} is owned by uid {st.st_uid}, not by us; refusing to use it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


#: a token or key file larger than this is not one of ours
MAX_SECRET_BYTES = 64 * 1024


def atomic_write(path: Path, data: bytes | Iterable[bytes], mode: int = 0o600, *, replace: bool = True) -> None:
    """Write ``data`` (bytes, or pieces of it) to ``path`` atomically: a temp file in
    the same dir, fsync, rename, fsync dir; readers see the old file or the whole new one.

    ``replace=False``: never replace an existing file; ``FileExistsError`` when
    ``path`` exists (the temp file is linked into place, which fails instead).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        for piece in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
            view = memoryview(piece)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _link_new(tmp: str, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (``FileExistsError``)."""
    try:
        os.link(tmp, path)  # fails, instead of replacing, when path exists
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # no hard links on this filesystem: rename after an existence check
        if path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def read_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """Return the token stored at ``path``, creating it (0600) on first use."""
    try:
        token = read_regular_file(path, MAX_SECRET_BYTES).decode("utf-8", "replace").strip()
        if token:
            if stat.S_IMODE(path.stat().st_mode) != 0o600:
                os.chmod(path, 0o600)
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(nbytes)
    atomic_write(path, (token + "\n").encode(), 0o600)
    return token


@dataclass(frozen=True, slots=True)
class Paths:
    config: Path
    runtime: Path

    @classmethod
    def from_env(cls) -> Paths:
        return cls(config_dir(), runtime_dir())

    @property
    def ipc_socket(self) -> Path:
        return self.runtime / "host.sock"

    @property
    def ipc_endpoint(self) -> str:
        return f"ipc://{self.ipc_socket}"

    @property
    def host_config(self) -> Path:
        """The config file ``punktfunk serve`` reads when not given ``-c FILE``."""
        return self.config / "host.toml"

    @property
    def mgmt_token(self) -> Path:
        return self.config / "mgmt-token"

    def ensure(self) -> Paths:
        ensure_private_dir(self.config)
        ensure_private_dir(self.runtime)
        return self
