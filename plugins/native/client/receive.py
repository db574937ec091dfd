"""The client's receiving side: UDP datagrams → FEC reassembly → decode → stamps.

One thread (:class:`StreamReceiver`) probes the host's data port until video
arrives, then feeds every datagram to :class:`punktfunk_native.datapath.NativeReceiver`
(authenticate, de-duplicate, rebuild lost shards) and each complete access
unit to the :class:`Decoder` (PyAV), which reads the test pattern's frame
stamp of every picture for end-to-end latency. Nothing the network delivers
raises out of the thread: bad datagrams are counted, undecodable units make
the client ask for a keyframe.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from punktfunk_core.paths import ensure_private_dir

from punktfunk_native.client.audio import AudioReceiver
from punktfunk_native.client.impair import LinkImpairment
from punktfunk_native.datapath import NativeReceiver, ReceivedAU, make_probe
from punktfunk_native.wire import MAX_PACKET, PKT_AUDIO

#: PyAV decoder per negotiated codec
AV_CODEC = {"h264": "h264", "hevc": "hevc", "av1": "libdav1d"}
#: how often the client probes the data port until the first datagram arrives
PROBE_INTERVAL_S = 0.05
#: give-ups kept by unit number (a few per second at the worst loss FEC is meant for)
MAX_GIVE_UPS = 100_000


class DecoderUnavailable(Exception):
    """The decoder cannot run here (a missing codec or library); the message says what to install."""


@dataclass
class Stats:
    frames_decoded: int = 0
    frames_undecodable: int = 0
    skipped_waiting_keyframe: int = 0
    stamps_unreadable: int = 0
    ids_in_order: bool = True
    last_id: int = -1
    e2e_us: list[int] = field(default_factory=list)
    decode_us: list[int] = field(default_factory=list)
    bytes: int = 0
    injected_loss: int = 0
    #: of those, dropped by the bandwidth cap (``--cap-mbps``)
    injected_cap: int = 0
    #: keyframes that arrived complete (rebuilt or not)
    keyframes: int = 0
    #: seconds after the first datagram at which frames were given up (the first 100)
    unrecoverable_at: list[float] = field(default_factory=list)
    #: the units given up, as (first au_seq, count) per give-up (the first MAX_GIVE_UPS): counting
    #: from a unit on, whenever the client learns which (``report_applied``)
    unrecoverable_units: list[tuple[int, int]] = field(default_factory=list)
    datagrams: int = 0
    first_packet: float = 0.0
    last_packet: float = 0.0
    #: monotonic times of the first and the last decoded frame
    first_decoded: float = 0.0
    last_decoded: float = 0.0

    @property
    def decoded_fps(self) -> float:
        """Frames decoded per second between the first and the last decoded frame."""
        span = self.last_decoded - self.first_decoded
        return (self.frames_decoded - 1) / span if self.frames_decoded > 1 and span > 0 else 0.0


class Decoder:
    """PyAV decoder + stamp reader; runs on the receive thread. ``want_keyframe``
    is set whenever the stream must resync on a keyframe."""

    def __init__(self, codec: str, stats: Stats, want_keyframe: threading.Event, save_dir: str | None) -> None:
        import av

        self.av = av
        ctx = av.CodecContext.create(AV_CODEC.get(codec, codec), "r")
        assert isinstance(ctx, av.VideoCodecContext)
        self.ctx = ctx
        try:
            self.ctx.thread_count = 1  # frame threading would add a frame of delay per thread
        except Exception:  # noqa: BLE001
            pass
        self.stats = stats
        self.want_keyframe = want_keyframe
        self.need_keyframe = True
        self.save_dir = Path(save_dir) if save_dir else None
        self._saveq: queue.SimpleQueue | None = None
        self._saver: threading.Thread | None = None
        if self.save_dir is not None:
            try:
                import PIL.Image  # noqa: F401 - PyAV's to_image() needs Pillow
            except ImportError:
                raise DecoderUnavailable("--save-frames needs Pillow (pip install pillow)") from None
            ensure_private_dir(self.save_dir)
            # PNG writing happens on its own thread so it never delays receiving
            self._saveq = queue.SimpleQueue()
            self._saver = threading.Thread(target=self._save_loop, name="native-save", daemon=True)
            self._saver.start()
        from punktfunk_core.media.stamp import latency_us, read_stamp_from_av_frame

        self._read_stamp = read_stamp_from_av_frame
        self._latency = latency_us
        #: called with each decoded frame (the click-to-photon probe), on the receive thread
        self.on_frame: Callable[[Any], None] | None = None

    def decode(self, au: ReceivedAU) -> None:
        st = self.stats
        if self.need_keyframe and not au.keyframe:
            st.skipped_waiting_keyframe += 1
            self.want_keyframe.set()
            return
        t0 = time.perf_counter_ns()
        try:
            frames = self.ctx.decode(self.av.Packet(au.data))
        except Exception:  # noqa: BLE001 - InvalidDataError and friends: count, resync on a keyframe
            st.frames_undecodable += 1
            self.need_keyframe = True
            self.want_keyframe.set()
            return
        if au.keyframe:
            self.need_keyframe = False
        dt = (time.perf_counter_ns() - t0) // 1000
        for frame in frames:
            st.frames_decoded += 1
            st.last_decoded = time.monotonic()
            if st.frames_decoded == 1:
                st.first_decoded = st.last_decoded
            st.decode_us.append(dt)
            stamp = self._read_stamp(frame)
            if stamp is None:
                st.stamps_unreadable += 1
                st.ids_in_order = False
            else:
                fid, cap_us = stamp
                st.e2e_us.append(self._latency(cap_us))
                if fid != au.frame_id or fid <= st.last_id:
                    st.ids_in_order = False
                st.last_id = fid
            if self.on_frame is not None:
                self.on_frame(frame)
            if self._saveq is not None:
                self._saveq.put((au.frame_id, frame))

    def _save_loop(self) -> None:
        assert self._saveq is not None and self.save_dir is not None
        while True:
            item = self._saveq.get()
            if item is None:
                return
            fid, frame = item
            try:
                frame.to_image().save(self.save_dir / f"frame-{fid:08d}.png", compress_level=1)
            except Exception:  # noqa: BLE001 - saving is best effort
                pass

    def close(self) -> None:
        if self._saveq is not None and self._saver is not None:
            self._saveq.put(None)
            self._saver.join(30.0)
        # PyAV before 14 closes a codec context by close(); later ones (no close) free it with the object
        close = getattr(self.ctx, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001
                pass


class StreamReceiver:
    """The receive thread of one session.

    Until the first datagram arrives it probes ``host`` (the host learns our
    UDP address from the probe); then every datagram goes through ``receiver``
    and each complete access unit to ``decoder``. ``impair`` drops datagrams on
    purpose (loss and a bandwidth cap: testing FEC and rate control). Audio datagrams
    (packet type ``PKT_AUDIO``, same flow) go to ``audio`` when the session has audio.
    """

    def __init__(self, udp: socket.socket, host: tuple[str, int], k_c2h: bytes, receiver: NativeReceiver,
                 decoder: Decoder, stats: Stats, *, impair: LinkImpairment | None = None,
                 audio: AudioReceiver | None = None) -> None:
        self.udp = udp
        self.host = host
        self.k_c2h = k_c2h
        self.receiver = receiver
        self.decoder = decoder
        self.audio = audio
        self.stats = stats
        self.impair = impair if impair is not None and impair.active else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="native-rx", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        r, st, udp, decoder, audio = self.receiver, self.stats, self.udp, self.decoder, self.audio
        impair = self.impair
        buf = bytearray(MAX_PACKET + 64)
        probe_seq = 0
        got_data = False
        next_probe = 0.0
        udp.settimeout(0.05)
        unrec = 0
        while not self._stop.is_set():
            now = time.monotonic()
            if not got_data and now >= next_probe:
                try:
                    udp.sendto(make_probe(self.k_c2h, probe_seq), self.host)
                except OSError:
                    pass
                probe_seq += 1
                next_probe = now + PROBE_INTERVAL_S
            try:
                n = udp.recv_into(buf)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            got_data = True
            st.datagrams += 1
            t = time.monotonic()
            if impair is not None and impair.drop(n, t):
                st.injected_loss += 1
                st.injected_cap = impair.capped
                continue
            if not st.first_packet:
                st.first_packet = t
            st.last_packet = t
            st.bytes += n
            if audio is not None and n > 1 and buf[1] == PKT_AUDIO:
                audio.push(bytes(buf[:n]))
                continue
            au = r.push(bytes(buf[:n]))
            if r.reasm.frames_unrecoverable != unrec:
                gave_up = r.reasm.frames_unrecoverable - unrec
                if len(st.unrecoverable_at) < 100:
                    st.unrecoverable_at.extend([round(t - st.first_packet, 3)] * gave_up)
                if len(st.unrecoverable_units) < MAX_GIVE_UPS:  # the units before the one delivered, or the next
                    first = au.au_seq - gave_up if au is not None else r.reasm.last_delivered + 1
                    st.unrecoverable_units.append((first, gave_up))
                unrec = r.reasm.frames_unrecoverable
                decoder.need_keyframe = True
                decoder.want_keyframe.set()
            if au is not None:
                if au.keyframe:
                    st.keyframes += 1
                decoder.decode(au)
