"""The GameStream control stream: ENet (pyenet) with AES-128-GCM messages both ways.

One thread owns the ENet host (ENet is not thread-safe): it services the
socket, decrypts client messages (IDR requests, FEC status, pings, input),
sends queued host messages (termination, rumble and other input feedback) and
ends a session whose client went silent. Undecryptable or malformed messages
are counted and dropped.

Input arrives only on the encrypted control stream this host negotiates (it
announces 7.1.431, so moonlight-common-c sends each input packet in plain
inside an encrypted 0x0206 message; the per-packet legacy framing of older
hosts, ``input.LegacyInputCipher``, is never negotiated). The connection is
authenticated by its connect data and the launch's AES key, so input is taken
only from the client of the current stream.
"""

from __future__ import annotations

import logging
import queue
import select
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import enet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from punktfunk_gamestream import wire_control
from punktfunk_gamestream.input import encode_feedback
from punktfunk_gamestream.wire import BadInput

if TYPE_CHECKING:
    from punktfunk_core.inputevents import FeedbackEvent, InputEvent

    from punktfunk_gamestream.plane import GameStreamPlane, Stream

log = logging.getLogger("punktfunk.gamestream.control")

CHANNELS = 0x30  # moonlight asks for CTRL_CHANNEL_COUNT channels
#: ENet events taken in one round of the loop before its input is handed on and its queue served
MAX_EVENTS_PER_ROUND = 64


def _rtt_us(peer: Any) -> float | None:
    """ENet's smoothed round-trip time of the peer (ms, from acknowledged reliable packets and its pings)."""
    try:
        rtt = float(peer.roundTripTime)
    except Exception:  # noqa: BLE001 - a peer torn down under us
        return None
    return rtt * 1000 if rtt > 0 else None


@dataclass
class _Conn:
    peer: Any
    stream: Stream
    aead: AESGCM
    last_rx: float
    seq_out: int = 0
    last_seq_in: int = -1
    closing: bool = False


class ControlServer:
    def __init__(self, plane: GameStreamPlane, bind: str, port: int) -> None:
        self.plane = plane
        self.host = enet.Host(enet.Address(bind.encode(), port), 8, CHANNELS, 0, 0)
        self.port = self.host.address.port
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._conns: dict[tuple[str, int], _Conn] = {}
        #: input events of this round of the loop, with their stream, and the first one's receive stamp
        self._input: list[tuple[Stream, InputEvent]] = []
        self._input_received_ns = 0
        self._thread = threading.Thread(target=self._loop, name="gamestream-control", daemon=True)
        self.timeout_s = float(plane.config.get("client_timeout_s", 10.0))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def terminate(self, stream: Stream, reason: str) -> None:
        """Tell the client of ``stream`` that it ended (from any thread)."""
        self._q.put(("terminate", stream, reason))

    def feedback(self, stream: Stream, event: FeedbackEvent) -> None:
        """Send rumble (or another feedback event) to the client of ``stream``
        (from any thread; never blocks)."""
        self._q.put(("feedback", stream, event))

    # -- the ENet thread -------------------------------------------------------------
    def _loop(self) -> None:
        # pyenet holds the GIL while service(timeout) waits, which stalls every other
        # thread of the host (the encoder, the pacer) for up to the timeout. So the
        # wait happens in select(), which releases it, and service() never blocks.
        fd = self.host.socket.fileno()
        while not self._stop.is_set():
            try:
                ev = self.host.service(0)
            except OSError as exc:
                log.warning("control socket error: %s", exc)
                time.sleep(0.05)
                continue
            busy = ev is not None and ev.type != enet.EVENT_TYPE_NONE
            try:
                for _ in range(MAX_EVENTS_PER_ROUND):  # all that arrived: its input goes in as one batch
                    if ev is None or ev.type == enet.EVENT_TYPE_NONE:
                        break
                    self._event(ev)
                    ev = self.host.service(0)
                self._submit_input()
                self._drain_queue()
                self._check_timeouts()
            except Exception:  # noqa: BLE001 - the control thread must survive anything
                self.plane.count("control_errors")
                log.exception("control stream error")
            if not busy:
                try:  # wake on a datagram, or after 5 ms for ENet's timers and our queue
                    select.select([fd], [], [], 0.005)
                except (OSError, ValueError):
                    time.sleep(0.005)
        for c in list(self._conns.values()):
            try:
                c.peer.disconnect_now(0)
            except Exception:  # noqa: BLE001
                pass

    @staticmethod
    def _key(peer: Any) -> tuple[str, int]:
        return (str(peer.address.host), int(peer.address.port))

    def _event(self, ev: Any) -> None:
        plane = self.plane
        peer = ev.peer
        key = self._key(peer)
        if ev.type == enet.EVENT_TYPE_CONNECT:
            stream = plane.current_stream()
            data = int(ev.data or 0) & 0xFFFFFFFF
            if stream is None or data != stream.connect_data:
                plane.count("control_rejected")
                log.info("control connection with unknown connect data %#x refused", data)
                peer.disconnect_now(0)
                return
            for k in list(self._conns):  # one stream at a time: the new connection replaces any other
                self._conns.pop(k).peer.disconnect_now(0)
            self._conns[key] = _Conn(peer, stream, plane.aead_for(stream), time.monotonic())
            log.info("control stream connected from %s", peer.address)
            return
        conn = self._conns.get(key)
        if ev.type == enet.EVENT_TYPE_DISCONNECT:
            if conn is not None:
                self._conns.pop(key, None)
                if not conn.closing:
                    log.info("control stream disconnected by the client")
                    plane.stream_ended(conn.stream, "the client disconnected")
            return
        if ev.type != enet.EVENT_TYPE_RECEIVE:
            return
        if conn is None:
            plane.count("control_bad")
            return
        received_ns = time.perf_counter_ns()  # an input event's receive stamp (the batch's first)
        try:
            seq, msg_type, payload = wire_control.open_control(conn.aead, ev.packet.data)
        except BadInput as exc:
            plane.count("control_bad")
            log.debug("control message dropped: %s", exc)
            return
        conn.last_rx = time.monotonic()
        self.handle_message(conn, msg_type, payload, received_ns)

    def handle_message(self, conn: _Conn, msg_type: int, payload: bytes, received_ns: int) -> None:
        plane = self.plane
        plane.count("control_messages")
        # every message (at least the 100 ms ping) may close the stream's loss window
        rtt_us = _rtt_us(conn.peer)
        plane.on_control_message(conn.stream, rtt_us)
        if msg_type == wire_control.CTRL_INPUT:
            event = plane.on_input(conn.stream, payload)
            if event is not None:
                if not self._input:
                    self._input_received_ns = received_ns
                self._input.append((conn.stream, event))
        elif msg_type in (wire_control.CTRL_REQUEST_IDR, wire_control.CTRL_INVALIDATE_REF):
            log.info("client requests an IDR frame (%#06x)", msg_type)
            plane.on_idr_request(conn.stream, rtt_us)
        elif msg_type == wire_control.CTRL_FEC_STATUS:
            try:
                st = wire_control.parse_fec_status(payload)
            except BadInput:
                plane.count("control_bad")
                return
            plane.count("fec_reports")
            plane.on_fec_status(conn.stream, st)
        # pings (0x0200), start B, frame/loss stats: nothing to do

    def _submit_input(self) -> None:
        """The input of this round into the sinks, in order, one batch per run of a stream."""
        batch, self._input = self._input, []
        start = 0
        for i in range(1, len(batch) + 1):
            if i == len(batch) or batch[i][0] is not batch[start][0]:
                self.plane.submit_input(batch[start][0], [e for _, e in batch[start:i]], self._input_received_ns)
                start = i

    def _send(self, conn: _Conn, msg_type: int, payload: bytes) -> None:
        data = wire_control.seal_control(conn.aead, conn.seq_out, msg_type, payload)
        conn.seq_out += 1
        conn.peer.send(0, enet.Packet(data, enet.PACKET_FLAG_RELIABLE))
        self.host.flush()

    def _drain_queue(self) -> None:
        while True:
            try:
                op, stream, arg = self._q.get_nowait()
            except queue.Empty:
                return
            if op == "feedback":
                msg_type, payload = encode_feedback(arg)
                for c in self._conns.values():
                    if c.stream is stream and not c.closing:
                        self._send(c, msg_type, payload)
                        self.plane.count("feedback_sent")
            elif op == "terminate":
                reason = arg
                for key, c in list(self._conns.items()):
                    if c.stream is stream and not c.closing:
                        log.info("sending termination to the client: %s", reason)
                        graceful = struct.pack(">I", wire_control.TERMINATION_GRACEFUL)
                        self._send(c, wire_control.CTRL_TERMINATION, graceful)
                        c.closing = True
                        c.peer.disconnect_later(0)
                        self._conns.pop(key, None)

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for key, c in list(self._conns.items()):
            if now - c.last_rx > self.timeout_s:
                log.warning("GameStream client silent for %.0f s: ending its stream", now - c.last_rx)
                self.plane.count("client_timeouts")
                self._conns.pop(key, None)
                c.closing = True
                try:
                    c.peer.disconnect_now(0)
                except Exception:  # noqa: BLE001
                    pass
                self.plane.stream_ended(c.stream, "client timed out")
