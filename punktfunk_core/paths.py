"""Where punktfunk keeps things, and owner-only file helpers.

config dir   $PUNKTFUNK_CONFIG_DIR or $XDG_CONFIG_HOME/punktfunk (~/.config/punktfunk), 0700
runtime dir  $PUNKTFUNK_RUNTIME_DIR or $XDG_RUNTIME_DIR/punktfunk or /tmp/punktfunk-$UID, 0700
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
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


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700, refusing one owned by someone else."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} is owned by uid {st.st_uid}, not by us; refusing to use it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, rename, fsync dir."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
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


def read_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """Return the token stored at ``path``, creating it (0600) on first use."""
    try:
        token = path.read_text().strip()
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
    def mgmt_token(self) -> Path:
        return self.config / "mgmt-token"

    @property
    def captures(self) -> Path:
        return self.config / "captures"

    def ensure(self) -> Paths:
        ensure_private_dir(self.config)
        ensure_private_dir(self.runtime)
        return self
