"""Stage contracts: the data that flows between stages and the stage kinds.

capture ──Frame──▶ encoder ──AccessUnit──▶ packetizer ──PacketBatch──▶ sender
audio_source ──PCM──▶ audio_encoder ──AccessUnit──▶ packetizer ──PacketBatch──▶ sender

and, the other way, client input ──▶ input sink ──▶ ``input`` stage (the host's
desktop; see :class:`InputBackend` and docs/input.md).

Each stage is a small class with an explicit ``close()``. Capture and encoder
stages are protocol-neutral; packetizers and senders belong to a protocol.
Stages never know whether they are being measured: the runner times them from
outside. A stage that wants to report a finer split (``fec_us`` …) fills the
``extra_ns`` dict of the :class:`PacketBatch` it is given, which the runner
only reads while measuring.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from punktfunk_core.inputevents import FeedbackEvent, InputClass, InputEvent, ScreenPointer

PIXEL_FORMATS = ("i420", "nv12")
CODECS = ("h264", "hevc", "av1")


@dataclass(slots=True, frozen=True)
class StreamSpec:
    """What a session streams: negotiated by the protocol, read by the stages."""

    width: int = 1280
    height: int = 720
    fps: int = 60
    codec: str = "h264"
    bitrate_kbps: int = 10_000
    keyframe_interval: int = 0  # frames; 0 = only on request (and the first)
    pixel_format: str = "i420"

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError(f"resolution {self.width}x{self.height} must be positive and even")
        if not 1 <= self.fps <= 1000:
            raise ValueError(f"fps {self.fps} out of range 1..1000")
        if self.codec not in CODECS:
            raise ValueError(f"codec {self.codec!r} is not one of {', '.join(CODECS)}")
        if self.pixel_format not in PIXEL_FORMATS:
            raise ValueError(f"pixel format {self.pixel_format!r} is not one of {PIXEL_FORMATS}")

    @property
    def frame_interval_ns(self) -> int:
        return 1_000_000_000 // self.fps


@dataclass(slots=True)
class Frame:
    """One raw picture in the encoder's input format.

    ``planes`` are numpy uint8 arrays: (Y, U, V) for ``i420``, (Y, UV) for
    ``nv12``. ``capture_ns`` is ``time.monotonic_ns()`` at capture (the clock
    shared by every process on the machine). ``is_repeat`` marks a frame
    re-sent because the source had nothing new.
    """

    planes: tuple[np.ndarray, ...]
    format: str
    width: int
    height: int
    frame_id: int
    capture_ns: int
    is_repeat: bool = False


@dataclass(slots=True)
class AccessUnit:
    """One encoded picture (Annex-B for H.264/HEVC, OBUs for AV1), or one
    encoded audio packet (``codec`` "opus"; the audio runner makes them)."""

    data: bytes
    keyframe: bool
    frame_id: int
    capture_ns: int
    codec: str = "h264"


@dataclass(slots=True)
class PacketBatch:
    """The datagrams of one access unit, ready for a sender.

    ``wire_bytes`` counts everything that goes on the wire (headers, FEC
    parity, AEAD tags). ``extra_ns`` collects optional timings a protocol
    wants reported (keys ``fec``, ``seal``, ``sock``, ``send_spread``).
    ``datagram_size``, when set, says every datagram has that size but the
    last, which may be shorter: the sender may then hand the kernel many at
    once (UDP GSO, :mod:`punktfunk_core.transport`). ``packets`` may be a
    :class:`punktfunk_core.transport.Datagrams` (all of them back to back in
    one buffer), which the sender passes on without cutting it up.
    """

    packets: Sequence[bytes | bytearray | memoryview]
    frame_id: int
    capture_ns: int
    keyframe: bool
    wire_bytes: int = 0
    extra_ns: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    datagram_size: int = 0


class Stage(abc.ABC):  # noqa: B024 - the stage kinds below declare the abstract methods
    """Base of every stage: has a name and releases its resources on close()."""

    #: registry name of the stage (set by the factory's registration)
    name: str = ""

    def close(self) -> None:  # noqa: B027 - default is a no-op on purpose
        """Release threads, sockets and codec state. Called exactly once."""


@dataclass(frozen=True, slots=True)
class ScreenArea:
    """A rectangle of the host's desktop in desktop pixels (a monitor, or
    the whole screen): where a capture source takes its picture from, and
    so where absolute pointer positions land."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"screen area {self.width}x{self.height} must be positive")


class CaptureSource(Stage):
    """Produces frames. The runner owns the frame clock and calls grab() once
    per frame interval (or back to back when unpaced)."""

    #: the part of the desktop the pictures show; None when the source is
    #: not a desktop (a test pattern, a file)
    screen_area: ScreenArea | None = None

    def follow_pointer(self, pointer: ScreenPointer) -> None:  # noqa: B027 - optional
        """The session's pointer as its client's input moves it, given once its
        input opens. A source that draws the pointer itself (the test pattern's
        marker) keeps it and reads ``pointer.position`` per frame; a desktop
        capture shows the real pointer and ignores it."""

    @abc.abstractmethod
    def grab(self, frame_id: int) -> Frame:
        """Return the next picture. ``frame_id`` is the runner's counter; a
        source that had nothing new returns a frame with ``is_repeat=True``."""


class Encoder(Stage):
    """Turns frames into access units.

    ``submit`` hands a frame to the encoder; ``receive`` waits for the
    bitstream it produced. Low-latency encoders return exactly one access unit
    per submitted frame (no B-frames, no lookahead).
    """

    #: input pixel format wanted by the encoder ("i420" or "nv12")
    input_format: str = "i420"
    #: backend name recorded in captures ("x264", "nvenc", ...)
    backend: str = ""
    #: GPU model name when the encoder runs on one, else ""
    gpu: str = ""

    @abc.abstractmethod
    def submit(self, frame: Frame) -> None:
        """Hand one frame to the encoder."""

    @abc.abstractmethod
    def receive(self) -> list[AccessUnit]:
        """Return the access units ready after the last submit."""

    @abc.abstractmethod
    def request_keyframe(self) -> None:
        """Make the next submitted frame an IDR/keyframe."""

    @abc.abstractmethod
    def set_bitrate(self, kbps: int) -> None:
        """Change the target bitrate from the next frame on."""

    @property
    @abc.abstractmethod
    def bitrate_kbps(self) -> int:
        """The current target bitrate."""


class Packetizer(Stage):
    """Splits an access unit into datagrams (framing, FEC, encryption)."""

    @abc.abstractmethod
    def packetize(self, au: AccessUnit) -> PacketBatch:
        """Return the datagrams for one access unit."""


class Sender(Stage):
    """Puts a batch on the wire (pacing it over the frame interval if it wants)."""

    #: optional counters the sender can measure; None means "cannot measure"
    send_dropped: int | None = None
    #: may ``send`` sleep (pacing) or block? Then the runner gives the sender
    #: a thread of its own behind a bounded queue. A sender that returns at
    #: once (unpaced, non-blocking socket writes) may say False: it then runs
    #: on the encode thread, with no hand-off per frame.
    waits: bool = True

    @abc.abstractmethod
    def send(self, batch: PacketBatch) -> None:
        """Send every packet of the batch (or count what could not be sent)."""


class AudioSource(Stage):
    """Produces interleaved s16 PCM."""

    sample_rate: int = 48_000
    channels: int = 2
    #: ``time.monotonic_ns()`` when the first sample of the last ``read()`` was
    #: captured (0 = unknown): the start of the audio path's latency
    capture_ns: int = 0
    #: True when ``read()`` itself waits for the device's next frame (a bounded wait: about a
    #: frame, and silence when it does not come): the audio runner then needs no clock of its
    #: own, and wakes once per frame
    self_paced: bool = False

    @abc.abstractmethod
    def read(self, samples: int) -> np.ndarray:
        """Return ``samples`` frames of int16 PCM shaped (samples, channels)."""


class AudioEncoder(Stage):
    """Turns PCM into codec packets (e.g. Opus, one packet per call)."""

    #: samples per channel each ``encode`` call takes (the audio runner's frame)
    frame_samples: int = 240
    #: codec of the packets, carried in the access units the runner makes of them
    codec: str = ""

    @abc.abstractmethod
    def encode(self, pcm: np.ndarray) -> list[bytes]:
        """Encode one frame of PCM; returns zero or more packets."""


class InputBackendGone(RuntimeError):
    """The backend's target is gone for good (the X server closed, the uinput
    device failed): the sink logs it once and stops injecting; the stream
    goes on without input."""


class InputBackend(Stage):
    """Injects client input into the host (an X server, the kernel's uinput).

    The session's :class:`punktfunk_core.inputsink.InputSink` owns it: it
    calls :meth:`open` once, then :meth:`inject` for each event of a batch
    followed by one :meth:`flush`, and finally ``close()`` on its injector
    thread. No two calls overlap. A batch runs on the injector thread, or, when
    all its events are of :attr:`inline_classes` and nothing else is queued,
    on the protocol thread that received it.
    """

    #: the input classes (``InputClass`` values: "keyboard", "mouse",
    #: "gamepad", "touch") this backend can inject; the sink counts and drops
    #: events of the others
    classes: frozenset[InputClass] = frozenset()
    #: the classes whose events ``inject`` and ``flush`` take without waiting:
    #: they only write to a local socket or device (no round trip, no sleep, no
    #: device to create); the sink may inject those on the thread that received them
    inline_classes: frozenset[InputClass] = frozenset()

    def open(self, stream_size: tuple[int, int], screen: ScreenArea | None,
             feedback: Callable[[FeedbackEvent], None]) -> None:  # noqa: B027 - optional
        """Get ready for a stream of ``stream_size`` (width, height) showing
        ``screen`` of the desktop (None: the whole screen, as the backend sees
        it). ``feedback`` takes host → client events (rumble …); call it from
        any thread, it must not block. Raise with a clear message when the
        backend cannot work here (no display, no permission)."""

    @abc.abstractmethod
    def inject(self, event: InputEvent) -> None:
        """Inject one event. Raise :class:`InputBackendGone` when the target
        is gone for good; any other exception is counted and the next event
        is tried."""

    def flush(self) -> None:  # noqa: B027 - optional
        """Make everything injected so far take effect (the end of a batch)."""


StageFactory = Callable[[StreamSpec, dict[str, Any]], Stage]

STAGE_KINDS = ("capture", "encoder", "packetizer", "sender", "audio_source", "audio_encoder", "input")
STAGE_BASES: dict[str, type[Stage]] = {
    "capture": CaptureSource,
    "encoder": Encoder,
    "packetizer": Packetizer,
    "sender": Sender,
    "audio_source": AudioSource,
    "audio_encoder": AudioEncoder,
    "input": InputBackend,
}
