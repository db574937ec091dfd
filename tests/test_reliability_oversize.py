"""Oversized input is refused early: a 100 MB RTSP request and a 2^31 control
message length never get buffered; the host stays up and counts them."""

from __future__ import annotations

import socket
import struct
import time

from gamestream_helpers import gs_config, wait_ready
from test_native_e2e import start_host
from test_native_protocol import Raw


def test_a_100_mb_rtsp_request_is_cut_off_early(host_factory, figures):
    host = host_factory(config=gs_config())
    port = wait_ready(host)["ports"]["rtsp"]
    sent = 0
    chunk = b"OPTIONS rtsp://x RTSP/1.0\r\nX-Pad: " + b"a" * 65000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            while sent < 100 * 1024 * 1024:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the host hung up
            pass
    assert sent < 16 * 1024 * 1024, f"the host kept reading: {sent} bytes accepted"
    figures("bytes a 100 MB RTSP request got in before the host hung up", sent)
    st = host.call("host.metrics")["counters"]
    assert any(k.startswith("gamestream.") and v > 0 for k, v in st.items()), st
    assert host.proc.poll() is None


def test_a_2_to_the_31_control_length_is_refused_from_the_prefix(host_factory, tmp_path, figures):
    h = start_host(host_factory, tmp_path)
    r = Raw(h.native_port)
    t0 = time.monotonic()
    r.sock.sendall(struct.pack("!I", 2 ** 31))
    m = r.recv()
    assert m["type"] == "error" and m["code"] == "protocol_error" and r.closed()
    figures("seconds until a 2^31-byte control length was refused", round(time.monotonic() - t0, 3))
    assert h.call("host.metrics")["counters"].get("native.protocol_errors", 0) >= 1
    assert h.proc.poll() is None
