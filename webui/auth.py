"""Auth lanes of the console: who may call which route.

Every route is classified into exactly one lane when it is registered:

``public``  the login page, the console shell, static files, ``/healthz``.
            They carry no host data.
``admin``   management routes. Need ``Authorization: Bearer <token>`` with the
            admin token (``<config>/mgmt-token``) or a plugin token
            (``<config>/plugin-tokens/<name>``), and only from loopback unless
            ``console.allow_remote_admin`` is set.
``device``  the read-only lane for paired devices: an explicit allow-list of
            GET routes that never contains a stats route (the stats plugin puts
            its own on the admin lane, and ``/api/v1/<plugin>/`` is only that
            plugin's to fill: ``app.NAMESPACE``). Reachable with a
            device token (``<config>/device-tokens/<name>``) from any address,
            or with an admin credential as above.

Device certificates (mTLS) are not in place yet; a device token issued at
pairing (:func:`issue_device_token`) stands in for the certificate, and the
lane is enforced by the allow-list, not by the token's origin.

Tokens are compared with :func:`hmac.compare_digest` against every known
token (no early exit that would tell which one nearly matched). Token files
are re-read when they change, so revoking a device or rotating the admin token
needs no console restart. A token shorter than :data:`MIN_TOKEN_CHARS` is
never accepted; a short ``mgmt-token`` stops ``serve``/``console`` at start
(:func:`admin_token_problem`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from punktfunk_core.paths import (
    MAX_SECRET_BYTES,
    atomic_write,
    ensure_private_dir,
    read_or_create_secret,
    read_regular_file,
)

LANES = ("public", "admin", "device")
ADMIN_TOKEN_FILE = "mgmt-token"
PLUGIN_TOKEN_DIR = "plugin-tokens"
DEVICE_TOKEN_DIR = "device-tokens"
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: shorter tokens are refused: guessable (ours are 43 characters, 256 bits)
MIN_TOKEN_CHARS = 16


class WeakAdminToken(ValueError):
    """``mgmt-token`` holds a token too short to protect the console."""


def admin_token_problem(config_dir: Path) -> str | None:
    """One line on what is wrong with ``<config>/mgmt-token``, or None (also when
    it does not exist yet: it is created at start). Never contains the token."""
    path = Path(config_dir) / ADMIN_TOKEN_FILE
    try:
        token = read_regular_file(path, MAX_SECRET_BYTES).decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return f"{path}: cannot read the admin token ({exc})"
    if token and len(token) < MIN_TOKEN_CHARS:
        return (f"{path}: the admin token has {len(token)} characters; it needs at least {MIN_TOKEN_CHARS} "
                "(delete the file and a new one is made at the next start)")
    return None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: ``role`` is "admin", "plugin" or "device"."""

    role: str
    name: str

    @property
    def is_admin(self) -> bool:
        return self.role in ("admin", "plugin")


def is_loopback(addr: str | None) -> bool:
    if not addr:
        return False
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return ip.is_loopback


_HOST_HEADER = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9.-]+))(?::\d{1,5})?")


def host_name(header: str | None) -> str | None:
    """The name a ``Host`` header gives (lowercase, no port, no trailing dot); None when malformed."""
    m = _HOST_HEADER.fullmatch((header or "").strip().lower())
    if m is None:
        return None
    name = (m.group("v6") or m.group("name") or "").rstrip(".")
    return name or None


class HostNames:
    """The names the console answers to: ``localhost``, loopback addresses, the
    address it is bound to, and ``console.allowed_hosts``.

    A page on another site can make a browser reach the console by pointing
    its own DNS name at 127.0.0.1 (DNS rebinding); the request then carries
    that name in ``Host``. A name outside this set is refused, so such a page
    never gets an answer it can read.
    """

    def __init__(self, bind: str = "127.0.0.1", allowed: list[str] | tuple[str, ...] = ()) -> None:
        names = {"localhost"}
        for raw in (bind, *allowed):
            name = host_name(raw if ":" not in raw or raw.startswith("[") else f"[{raw}]")
            if name and name not in ("0.0.0.0", "::"):  # a wildcard bind is no name a browser uses
                names.add(name)
        self.names = frozenset(names)

    def allows(self, header: str | None) -> bool:
        name = host_name(header)
        if name is None:
            return False
        if name in self.names:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None


def _valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name)) and name not in (".", "..")


class TokenStore:
    """The tokens of one config dir, re-read when their files change."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = Path(config_dir)
        self._cache: dict[str, tuple[tuple, dict[str, str]]] = {}

    def ensure_admin_token(self) -> str:
        """Create ``mgmt-token`` (0600, in a 0700 dir) when missing; return it.
        Raises :class:`WeakAdminToken` when the file holds a short token."""
        ensure_private_dir(self.config_dir)
        problem = admin_token_problem(self.config_dir)
        if problem:
            raise WeakAdminToken(problem)
        return read_or_create_secret(self.config_dir / ADMIN_TOKEN_FILE)

    def _dir_tokens(self, sub: str) -> dict[str, str]:
        d = self.config_dir / sub
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except FileNotFoundError:
            return {}
        stamp_list = []
        for e in entries:
            try:
                if e.is_file():
                    st = e.stat()
                    stamp_list.append((e.name, st.st_mtime_ns, st.st_size))
            except OSError:  # removed while we looked: simply not a token any more
                continue
        stamp = tuple(stamp_list)
        cached = self._cache.get(sub)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        tokens: dict[str, str] = {}
        for name, _m, _s in stamp:
            if not _valid_name(name) or name.startswith("."):
                continue
            try:
                tok = read_regular_file(d / name, MAX_SECRET_BYTES).decode("utf-8", "replace").strip()
            except (OSError, ValueError):
                continue
            if len(tok) >= MIN_TOKEN_CHARS:  # refuse trivially guessable tokens
                tokens[name] = tok
        self._cache[sub] = (stamp, tokens)
        return tokens

    def names(self) -> dict[str, list[str]]:
        """The names (never the values) of the device and plugin tokens."""
        return {"device": sorted(self._dir_tokens(DEVICE_TOKEN_DIR)),
                "plugin": sorted(self._dir_tokens(PLUGIN_TOKEN_DIR))}

    def _admin_token(self) -> str | None:
        path = self.config_dir / ADMIN_TOKEN_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._cache.get(ADMIN_TOKEN_FILE)
        if cached is not None and cached[0] == stamp:
            return cached[1].get("admin")
        try:
            tok = read_regular_file(path, MAX_SECRET_BYTES).decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return None
        usable = len(tok) >= MIN_TOKEN_CHARS  # a short token written while we run is refused too
        self._cache[ADMIN_TOKEN_FILE] = (stamp, {"admin": tok} if usable else {})
        return tok if usable else None

    def identify(self, token: str | None) -> Caller | None:
        """The caller a presented token belongs to, or None."""
        if not token:
            return None
        presented = token.encode()
        found: Caller | None = None
        candidates: list[tuple[Caller, str]] = []
        admin = self._admin_token()
        if admin:
            candidates.append((Caller("admin", "admin"), admin))
        candidates += [(Caller("plugin", n), t) for n, t in self._dir_tokens(PLUGIN_TOKEN_DIR).items()]
        candidates += [(Caller("device", n), t) for n, t in self._dir_tokens(DEVICE_TOKEN_DIR).items()]
        for caller, secret in candidates:
            # compare against all, keep the first match: timing does not depend on which matched
            if hmac.compare_digest(presented, secret.encode()) and found is None:
                found = caller
        return found


def _issue(config_dir: Path, sub: str, name: str) -> str:
    if not _valid_name(name):
        raise ValueError(f"token name {name!r} must match [A-Za-z0-9._-]{{1,64}}")
    d = ensure_private_dir(Path(config_dir) / sub)
    token = secrets.token_urlsafe(32)
    atomic_write(d / name, (token + "\n").encode(), 0o600)
    return token


def issue_device_token(config_dir: Path, name: str) -> str:
    """Create (or replace) the device token ``name``; protocol plugins call this at pairing."""
    return _issue(config_dir, DEVICE_TOKEN_DIR, name)


def issue_plugin_token(config_dir: Path, name: str) -> str:
    """Create (or replace) an admin-lane token for a plugin or tool (e.g. a Prometheus scraper)."""
    return _issue(config_dir, PLUGIN_TOKEN_DIR, name)


def revoke_token(config_dir: Path, kind: str, name: str) -> bool:
    """Delete a device or plugin token; True if it existed."""
    sub = {"device": DEVICE_TOKEN_DIR, "plugin": PLUGIN_TOKEN_DIR}[kind]
    if not _valid_name(name):
        return False
    try:
        (Path(config_dir) / sub / name).unlink()
        return True
    except FileNotFoundError:
        return False
