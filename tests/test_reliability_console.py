"""Attacks on the console, the files the host reads back and its IPC channel,
tried against a real host and real gunicorn workers.

Each test tries what an attacker (a web page doing DNS rebinding, a 20 MB
body, JSON nested a hundred thousand levels deep, a FIFO or a hostile file in
the captures directory, a raw IPC request) or a careless operator would, and
then checks that every request got an answer, nothing the host kept was lost
and the host still answers. ``python -m bench.reliability`` runs them once more
and writes their figures into docs/reliability.md.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import zmq
from conftest import pf_env
from webui_helpers import admin_token, console_cfg, paths_of, run_cli_to_exit

from punktfunk_webui.server import start_console

DEEP = 100_000  # levels of nesting in the hostile documents: far beyond any recursion limit


@pytest.fixture
def stack(host_factory: Any, pf_dirs: dict[str, Path]) -> Iterator[Any]:
    """``stack(**console_extra)``: a real host and a real gunicorn console against it."""
    handles: list[Any] = []

    def start(host_start: bool = True, **extra: Any) -> tuple[Any, Any, str]:
        host = host_factory() if host_start else None
        handle = start_console(console_cfg(workers=2, **extra), paths_of(pf_dirs))
        handles.append(handle)
        return host, handle, admin_token(paths_of(pf_dirs))

    yield start
    for h in handles:
        h.stop()


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def _raw_get(port: int, path: str, host_header: str | None, token: str = "") -> tuple[int, bytes]:
    """One GET with exactly the Host header given (None: no Host header at all)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host_header is not None:
            conn.putheader("Host", host_header)
        if token:
            conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _api(url: str, token: str, path: str, method: str = "GET", **kw: Any) -> requests.Response:
    return requests.request(method, url + path, headers={"Authorization": f"Bearer {token}", "Connection": "close"},
                            timeout=5, **kw)


def _host_alive(host: Any, url: str, token: str) -> bool:
    return host.proc.poll() is None and _api(url, token, "api/v1/host").status_code == 200


def test_dns_rebinding_host_names_are_refused_and_loopback_names_pass(stack: Any, figures: Any) -> None:
    host, console, token = stack(allowed_hosts=["console.example.net"])
    port = _port(console.url)
    foreign = ["evil.example", f"evil.example:{port}", f"127.0.0.1.nip.io:{port}", f"localhost.evil.example:{port}",
               f"LOCALHOST.evil.example.:{port}", "", "bad host!", None]
    own = ["127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost.:{port}", f"[::1]:{port}",
           f"console.example.net:{port}", f"Console.Example.Net:{port}"]
    refused = 0
    for name in foreign:
        for path in ("/healthz", "/", "/static/js/api.js", "/api/v1/host", "/api/v1/stats/recordings", "/nope"):
            status, body = _raw_get(port, path, name, token)
            assert status == 400, (name, path, status, body[:200])
            if path.startswith("/api/"):
                assert b"allowed_hosts" in body, body
            refused += 1
    for name in own:
        status, body = _raw_get(port, "/api/v1/host", name, token)
        assert status == 200, (name, status, body[:200])
    figures("requests with a foreign Host header (DNS rebinding) refused / tried", f"{refused} / {refused}")
    assert _host_alive(host, console.url, token)
    figures("host and console answering afterwards", "yes")


def test_bind_address_is_an_allowed_host_name(stack: Any) -> None:
    """A console bound to a specific address answers requests naming that address."""
    host, console, token = stack(bind="127.0.0.2")
    status, _ = _raw_get_at("127.0.0.2", _port(console.url), "/healthz", f"127.0.0.2:{_port(console.url)}")
    assert status == 200
    status, _ = _raw_get_at("127.0.0.2", _port(console.url), "/healthz", "rebound.example")
    assert status == 400


def _raw_get_at(addr: str, port: int, path: str, host_header: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(addr, port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host_header)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _send_head(port: int, head: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(head.encode())
    return s


def _status_line(s: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def _closed_by_server(s: socket.socket) -> bool:
    """After the answer, the server hangs up instead of reading (draining) the body."""
    s.settimeout(3)
    try:
        while s.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_20_mb_body_is_refused_with_413_before_it_is_read(stack: Any, figures: Any) -> None:
    host, console, token = stack()
    port = _port(console.url)
    tried = 0
    for path, auth in (("/api/v1/tokens/device", True), ("/api/v1/stats/capture/start", True),
                       ("/api/v1/tokens/device", False), ("/healthz", False)):
        # only the head is sent: a server that waits for the body never answers
        s = _send_head(port, f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                             + (f"Authorization: Bearer {token}\r\n" if auth else "")
                             + "Content-Type: application/json\r\nContent-Length: 20000000\r\n\r\n")
        try:
            t0 = time.monotonic()
            line = _status_line(s)
            assert line.startswith("HTTP/1.1 413"), (path, line)
            assert time.monotonic() - t0 < 3
            assert _closed_by_server(s), path
        finally:
            s.close()
        tried += 1
    # a body without a length (chunked) could be any size: refused from its head as well
    s = _send_head(port, f"POST /api/v1/tokens/device HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                         f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n")
    try:
        line = _status_line(s)
        assert line.startswith("HTTP/1.1 411"), line
        assert _closed_by_server(s)
    finally:
        s.close()
    tried += 1
    figures("20 MB and chunked request bodies refused from their head, connection closed unread",
            f"{tried} / {tried}")
    assert _host_alive(host, console.url, token)
    assert _api(console.url, token, "api/v1/tokens/device", "POST", json={"name": "tv"}).status_code == 200
    figures("host and console answering afterwards", "yes")


def test_deeply_nested_json_body_is_a_400_not_a_500(stack: Any, figures: Any) -> None:
    host, console, token = stack()
    for body in (b"[" * 60_000, b'{"name":' * 7_000, b"[" * 30_000 + b"]" * 30_000, b'{"name": NaN}'):
        r = requests.post(console.url + "api/v1/tokens/device", data=body, timeout=5,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                   "Connection": "close"})
        assert r.status_code == 400, (r.status_code, r.text[:200])
        assert "error" in r.json()
    assert _host_alive(host, console.url, token)
    figures("deep or NaN JSON bodies answered 400 / tried, host answering afterwards", "4 / 4, yes")


def test_an_admin_token_shorter_than_16_characters_is_not_accepted(stack: Any, pf_dirs: dict[str, Path]) -> None:
    host, console, token = stack()
    assert _api(console.url, token, "api/v1/host").status_code == 200
    (pf_dirs["config"] / "mgmt-token").write_text("x" * 15 + "\n")
    r = _api(console.url, "x" * 15, "api/v1/host")
    assert r.status_code == 401, r.text
    (pf_dirs["config"] / "mgmt-token").write_text("y" * 16 + "\n")
    assert _api(console.url, "y" * 16, "api/v1/host").status_code == 200


# -- files the host reads back ---------------------------------------------------------------
def _nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def _good_capture(host: Any) -> str:
    host.call("stats.start")
    return host.call("stats.stop")["id"]


@pytest.mark.parametrize("doc", [
    '{"samples":' + _nested(DEEP) + ',"meta":{"id":"x"}}',                 # meta last: parsed in full
    '{"meta":{"id":' + _nested(DEEP) + '},"samples":[]}',                  # meta itself deep
    '{"meta":{"id":"x","gpu":' + _nested(5_000, "{\"a\":", "}") + '},"samples":[]}',
    '{"meta":{"id":"x"},"samples":[' + _nested(DEEP) + ']}',               # meta fine, samples deep
], ids=["deep-samples-meta-last", "deep-meta", "deep-object-meta", "deep-samples-meta-first"])
def test_a_deeply_nested_capture_file_is_skipped_and_the_others_stay(stack: Any, pf_dirs: dict[str, Path],
                                                                     doc: str, figures: Any) -> None:
    host, console, token = stack()
    good = _good_capture(host)
    captures = pf_dirs["config"] / "captures"
    (captures / "20990101-000000-000.json").write_text(doc)
    r = _api(console.url, token, "api/v1/stats/recordings")
    assert r.status_code == 200, r.text[:300]
    ids = [m["id"] for m in r.json()]
    assert good in ids
    for path in ("api/v1/stats/recordings/20990101-000000-000", "api/v1/stats/recordings/20990101-000000-000/summary",
                 "api/v1/stats/recordings/20990101-000000-000.csv"):
        r = _api(console.url, token, path)
        assert r.status_code in (200, 404), (path, r.status_code, r.text[:300])
    assert _api(console.url, token, f"api/v1/stats/recordings/{good}").status_code == 200
    assert _host_alive(host, console.url, token)
    figures("good captures lost / recordings list failures / host answering afterwards", "0 / 0 / yes")


def test_a_deeply_nested_captures_index_is_rebuilt_on_the_first_list(stack: Any, host_factory: Any,
                                                                     pf_dirs: dict[str, Path]) -> None:
    host, console, token = stack()
    good = _good_capture(host)
    assert _api(console.url, token, "api/v1/stats/recordings").status_code == 200  # writes .index.json
    host.stop()
    index = pf_dirs["config"] / "captures" / ".index.json"
    for doc in ('{"version":1,"entries":' + _nested(DEEP, '{"a":', "}") + "}",
                '{"version":1,"entries":{"' + good + '.json":[1,2,3,{"id":"a","gpu":' + _nested(900) + "}]}}"):
        index.write_text(doc)
        host = host_factory()
        r = _api(console.url, token, "api/v1/stats/recordings")
        assert r.status_code == 200, r.text[:300]
        assert [m["id"] for m in r.json()] == [good]
        host.stop()


def test_a_fifo_in_the_captures_directory_never_blocks_the_host(stack: Any, pf_dirs: dict[str, Path],
                                                                figures: Any) -> None:
    host, console, token = stack()
    good = _good_capture(host)
    captures = pf_dirs["config"] / "captures"
    fifos = [captures / "20990101-000000-000.json", captures / ".index.json"]
    for f in fifos:
        if f.exists():
            f.unlink()
        os.mkfifo(f, 0o600)
    try:
        tried = 0
        for path, method in (("api/v1/stats/recordings/20990101-000000-000", "GET"),
                             ("api/v1/stats/recordings/20990101-000000-000/summary", "GET"),
                             ("api/v1/stats/recordings", "GET"),
                             ("api/v1/stats/recordings/20990101-000000-000", "DELETE")):
            t0 = time.monotonic()
            r = _api(console.url, token, path, method)
            assert time.monotonic() - t0 < 2.0
            assert r.status_code in (200, 404), (path, r.status_code, r.text[:200])
            tried += 1
        assert good in [m["id"] for m in _api(console.url, token, "api/v1/stats/recordings").json()]
        assert _host_alive(host, console.url, token)
        figures("requests naming a FIFO in the captures directory answered within 2 s / tried", f"{tried} / {tried}")
        figures("good captures lost / host answering afterwards", "0 / yes")
    finally:
        for f in fifos:  # a host that still waits on one is released
            try:
                fd = os.open(f, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass


def test_the_captures_index_is_not_a_capture_id(stack: Any, pf_dirs: dict[str, Path]) -> None:
    host, console, token = stack()
    good = _good_capture(host)
    assert _api(console.url, token, "api/v1/stats/recordings").status_code == 200
    index = pf_dirs["config"] / "captures" / ".index.json"
    assert index.exists()
    for method in ("GET", "DELETE"):
        r = _api(console.url, token, "api/v1/stats/recordings/.index", method)
        assert r.status_code == 404, (method, r.status_code, r.text[:200])
    for cmd in ("stats.load", "stats.delete", "stats.summary"):
        with pytest.raises(Exception, match="not found"):
            host.call(cmd, id=".index")
    assert index.exists()
    assert good in [m["id"] for m in _api(console.url, token, "api/v1/stats/recordings").json()]


# -- the IPC channel -----------------------------------------------------------------------
def _raw_ipc(pf_dirs: dict[str, Path], body: bytes, timeout_ms: int = 3000) -> dict[str, Any] | None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.connect(f"ipc://{pf_dirs['runtime'] / 'host.sock'}")
    try:
        s.send(body)
        return json.loads(s.recv())
    except zmq.Again:
        return None
    finally:
        s.close()


def test_a_deeply_nested_ipc_request_is_refused_and_the_channel_stays_up(stack: Any, pf_dirs: dict[str, Path],
                                                                         figures: Any) -> None:
    host, console, token = stack()
    bodies = [b'{"cmd":"host.status","args":' + _nested(DEEP, '{"a":', "}").encode() + b"}",
              b'{"cmd":"stats.load","args":{"id":' + _nested(DEEP).encode() + b"}}",
              _nested(DEEP).encode(),
              b'{"cmd":"host.status","args":{"x":NaN}}']
    for body in bodies:
        reply = _raw_ipc(pf_dirs, body)
        assert reply is not None, "no answer: the IPC thread is gone"
        assert reply["ok"] is False and reply["code"] == 400, reply
    assert host.call("host.status")["pid"] == host.proc.pid
    assert _host_alive(host, console.url, token)
    figures("hostile IPC requests answered with 400 / tried, IPC channel up afterwards",
            f"{len(bodies)} / {len(bodies)}, yes")


def _serve_alone(pf_dirs: dict[str, Path]) -> tuple[int | None, str]:
    """`punktfunk serve --no-console` with native on, until it exits: status and output."""
    config = pf_dirs["base"] / "host.toml"
    config.write_text("[native]\nport = 0\n")
    return run_cli_to_exit(["serve", "--no-console", "-c", str(config)], pf_env(pf_dirs))


@pytest.mark.parametrize("kind", ["deep", "fifo"])
def test_a_bad_paired_clients_file_is_refused_with_one_clear_line(pf_dirs: dict[str, Path], kind: str) -> None:
    """native cannot start without its paired clients; with nothing else to serve, the
    host says why in one line and exits (it never hangs on a FIFO or dies of recursion)."""
    paired = pf_dirs["config"] / "native" / "paired-clients.json"
    paired.parent.mkdir(parents=True, mode=0o700)
    if kind == "deep":
        paired.write_text(_nested(DEEP))
    else:
        os.mkfifo(paired, 0o600)
    try:
        rc, out = _serve_alone(pf_dirs)
    finally:
        if kind == "fifo":  # release a host that still waits on it
            try:
                os.close(os.open(paired, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
    assert rc == 1, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("punktfunk: ") and "native" in last and str(paired) in last, last
    assert ("regular file" if kind == "fifo" else "nested") in last, last
    assert "Traceback" not in out and "RecursionError" not in out
