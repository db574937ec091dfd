"""punktfunk/1 pairing and admission under attack, against a real host on loopback.

An attacker here is a raw TLS client speaking the control protocol with its own
PIN guesses (SPAKE2 like the reference client), or many connections that never
authenticate and keep pinging. Sources other than 127.0.0.1 are other loopback
addresses (127.0.0.0/8 is all local), so "many attackers" needs no namespace."""

from __future__ import annotations

import statistics
import threading
import time

from spake2 import SPAKE2_A
from test_native_e2e import start_host
from test_native_protocol import Raw, open_session, paired_client

from punktfunk_native.client import ClientOptions, NativeClient
from punktfunk_native.identity import load_or_create_identity
from punktfunk_native.wire import (
    SPAKE_ID_CLIENT,
    SPAKE_ID_HOST,
    b64d,
    b64e,
    fingerprint,
    pairing_confirm_keys,
    pairing_mac,
)


class Guess:
    """One online PIN guess: hello, pair_start; ``confirm()`` later."""

    def __init__(self, port: int, pin: str, cert, source: str) -> None:
        self.r = Raw(port, source=source)
        host_cert = self.r.sock.getpeercert(binary_form=True)
        assert host_cert is not None
        self.host_fp = fingerprint(host_cert)
        self.cert = cert
        self.r.send({"type": "hello", "versions": ["punktfunk/1"]})
        assert self.r.recv()["type"] == "welcome"
        self.spake = SPAKE2_A(pin.encode(), idA=SPAKE_ID_CLIENT, idB=SPAKE_ID_HOST)
        self.msg_a = self.spake.start()
        self.r.send({"type": "pair_start", "spake": b64e(self.msg_a), "client_cert": b64e(cert.cert_der),
                     "name": "guesser"})

    def reply(self) -> dict:
        self.answer = self.r.recv()
        return self.answer

    def confirm(self) -> tuple[dict, float]:
        """The host's answer to our MAC, and how long it took (seconds)."""
        msg_b = b64d(self.answer["spake"], "spake", 256)
        key = self.spake.finish(msg_b)
        kc, _kh = pairing_confirm_keys(key, self.host_fp, self.cert.fingerprint, self.msg_a, msg_b)
        t0 = time.perf_counter()
        self.r.send({"type": "pair_confirm", "mac": b64e(pairing_mac(kc, b"client"))})
        out = self.r.recv()
        return out, time.perf_counter() - t0


def _native(h) -> dict:
    return h.call("host.status")["protocols"]["native"]


def test_parallel_pair_starts_share_the_attempt_limit(host_factory, tmp_path, figures):
    """Twelve connections from twelve addresses each start a guess inside one
    window: only `pairing_attempts` (5) are taken, the rest are told the window
    is closed before any PIN is checked, and every checked guess fails alike."""
    h = start_host(host_factory, tmp_path)
    cert = load_or_create_identity(tmp_path / "attacker", "client", "attacker")
    h.call("pairing.pin", protocol="native", pin="4711")
    guesses = [Guess(h.native_port, f"{1000 + i}", cert, f"127.0.0.{10 + i}") for i in range(12)]
    answers = [g.reply() for g in guesses]
    taken = [g for g, a in zip(guesses, answers, strict=True) if a["type"] == "pair_reply"]
    closed = [a for a in answers if a["type"] == "error"]
    figures("parallel pair_start attempts taken / sent within one window", f"{len(taken)} / {len(guesses)}")
    assert len(taken) == 5, answers
    assert {a["code"] for a in closed} == {"pairing_closed"}
    results = [g.confirm()[0] for g in taken]
    assert all(r["type"] == "error" and r["code"] == "wrong_pin" for r in results), results
    assert len({repr(r) for r in results}) == 1, "every failed guess must get the same answer"
    st = _native(h)
    assert st["pairing_open"] is False and st["counters"]["pairing_ok"] == 0
    figures("PIN guesses the host checked", len(results))
    # the operator opens a new window: a real client pairs at once
    h.call("pairing.pin", protocol="native", pin="2468")
    NativeClient(ClientOptions(host="127.0.0.1", port=h.native_port, pin="2468",
                               config_dir=tmp_path / "cli")).ensure_paired()
    assert len(h.call("pairing.clients", protocol="native")) == 1


def test_the_right_pin_fails_like_a_wrong_one_once_its_window_is_gone(host_factory, tmp_path, figures):
    """A confirmation that arrives after the window closed must not tell the
    right PIN from a wrong one (the old answer `pairing_closed` did)."""
    h = start_host(host_factory, tmp_path)
    cert = load_or_create_identity(tmp_path / "attacker", "client", "attacker")
    right_s, wrong_s = [], []
    for rnd in range(6):
        h.call("pairing.pin", protocol="native", pin="4711")
        right = Guess(h.native_port, "4711", cert, "127.0.0.2")
        wrong = Guess(h.native_port, "1234", cert, "127.0.0.3")
        assert right.reply()["type"] == "pair_reply" and wrong.reply()["type"] == "pair_reply"
        h.call("pairing.pin", protocol="native", pin=f"86{rnd:02d}")  # the operator replaces the window meanwhile
        if rnd % 2:
            got_wrong, t_wrong = wrong.confirm()
            got_right, t_right = right.confirm()
        else:
            got_right, t_right = right.confirm()
            got_wrong, t_wrong = wrong.confirm()
        assert got_right == got_wrong, (got_right, got_wrong)
        assert got_right["code"] == "wrong_pin"
        right_s.append(t_right)
        wrong_s.append(t_wrong)
    assert h.call("pairing.clients", protocol="native") == []
    figures("answer time p50, right PIN after its window closed / wrong PIN",
            f"{statistics.median(right_s) * 1e3:.2f} / {statistics.median(wrong_s) * 1e3:.2f}", "ms")


def _hold(port: int, source: str, until: float, out: list) -> None:
    """Connect without a certificate, say hello, then ping every 0.3 s until the
    host hangs up; records (opened, closed or None)."""
    try:
        r = Raw(port, source=source)
        r.send({"type": "hello", "versions": ["punktfunk/1"]})
        r.recv(skip_pings=False)
    except Exception:  # noqa: BLE001 - closed while connecting counts as closed at once
        now = time.monotonic()
        out.append((now, now))
        return
    opened = time.monotonic()
    n = 0
    while time.monotonic() < until:
        n += 1
        try:
            r.send({"type": "ping", "id": n, "t_us": n})
            if r.closed(0.3):
                out.append((opened, time.monotonic()))
                return
        except OSError:
            out.append((opened, time.monotonic()))
            return
    out.append((opened, None))
    r.sock.close()


def test_unauthenticated_flood_cannot_lock_out_paired_or_pairing_clients(host_factory, tmp_path, figures):
    """24 connections without a certificate (16 from the clients' own address)
    keep pinging: each is closed by its deadline all the same, and meanwhile a
    paired client streams and a new client pairs."""
    h = start_host(host_factory, tmp_path, extra="unauthenticated_timeout_s = 2")
    c = paired_client(h, tmp_path)
    until = time.monotonic() + 8.0
    held: list = []
    threads = [threading.Thread(target=_hold, args=(h.native_port, src, until, held), daemon=True)
               for src in ["127.0.0.1"] * 16 + ["127.0.0.2"] * 8]
    for t in threads:
        t.start()
    time.sleep(0.5)
    # the paired client gets in (same source address as 16 of the attackers)
    r, udp, _acc, _k, started = open_session(h, c)
    assert started["type"] == "session_started"
    r.send({"type": "bye"})
    udp.close()
    # and so does a client that pairs now
    h.call("pairing.pin", protocol="native", pin="1357")
    NativeClient(ClientOptions(host="127.0.0.1", port=h.native_port, pin="1357",
                               config_dir=tmp_path / "newcomer")).ensure_paired()
    for t in threads:
        t.join(15)
    survivors = [x for x in held if x[1] is None]
    longest = max(x[1] - x[0] for x in held if x[1] is not None)
    st = _native(h)
    figures("unauthenticated connections still open after 8 s of pings (deadline 2 s)", len(survivors))
    figures("longest an unauthenticated pinging connection was held", f"{longest:.1f}", "s")
    figures("connections closed by per-source eviction / by deadline",
            f"{st['counters']['unauthenticated_evicted']} / {st['counters']['unauthenticated_timed_out']}")
    assert len(held) == 24 and not survivors, held
    assert st["counters"]["unauthenticated_timed_out"] >= 1
    assert len(h.call("pairing.clients", protocol="native")) == 2
    assert h.proc.poll() is None
