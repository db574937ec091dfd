"""GameStream input packets → the event model, and feedback messages back.

Fixed vectors are written byte by byte from the layouts in docs/input.md
(the structures of moonlight-common-c's Input.h); property tests check that
every event survives encode → parse, and that no byte string makes the
parser raise anything but MalformedInput.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from punktfunk_core.inputevents import (
    BatteryState,
    Button,
    ControllerArrival,
    ControllerBattery,
    ControllerButton,
    ControllerCapability,
    ControllerLed,
    ControllerMotion,
    ControllerRemoval,
    ControllerState,
    ControllerTouch,
    ControllerType,
    Key,
    Modifier,
    MotionEventRate,
    MotionSensor,
    MouseButton,
    Pen,
    PenButton,
    PenTool,
    PointerMove,
    PointerPosition,
    Rumble,
    Scroll,
    Text,
    Touch,
    TouchPhase,
    TriggerRumble,
)

from punktfunk_gamestream.input import (
    HapticsEnable,
    LegacyInputCipher,
    MalformedInput,
    encode_feedback,
    encode_input,
    parse_input,
)

H = bytes.fromhex


# ---- fixed vectors ------------------------------------------------------------------------------

VECTORS = [
    # (packet as moonlight-common-c builds it, generation, event)
    ("0000000a 03000000 00 4100 01 0000", 7, Key(0x41, True, Modifier.SHIFT)),  # 'A' down with Shift
    ("0000000a 04000000 00 a080 00 0000", 7, Key(0xA0, False)),  # left Shift up; the high byte is ignored
    ("0000000e 05000000 0140 00b4 0000 027f 0167", 7, PointerPosition(320, 180, 639, 359)),
    ("00000008 07000000 fffb 000a", 7, PointerMove(-5, 10)),
    ("00000008 06000000 fffb 000a", 4, PointerMove(-5, 10)),  # before generation 5
    ("00000005 08000000 03", 7, Button(MouseButton.RIGHT, True)),
    ("00000005 09000000 05", 7, Button(MouseButton.X2, False)),
    ("00000005 07000000 01", 4, Button(MouseButton.LEFT, True)),
    ("00000005 08000000 01", 4, Button(MouseButton.LEFT, False)),
    ("0000000a 0a000000 ff88 ff88 0000", 7, Scroll(-120)),
    ("0000000a 09000000 003c 003c 0000", 4, Scroll(60)),
    ("00000006 01000055 00f0", 7, Scroll(240, horizontal=True)),
    ("00000006 17000000 c3a9", 7, Text("é")),
    ("00000008 17000000 f09f9880", 7, Text("😀")),
    ("00000006 0d000000 0100", 7, HapticsEnable(True)),
    # controller 1 of pads 0 and 1: A and paddle 1 pressed, triggers 255/0, left stick full left/up
    ("0000001e 0c000000 1a00 0100 0300 1400 0010 ff 00 0080 ff7f 0000 0000 9c00 0100 5500", 7,
     ControllerState(1, ControllerButton.A | ControllerButton.PADDLE1, 255, 0, -32768, 32767, 0, 0)),
    ("0000001e 0d000000 1a00 0000 0100 1400 0100 00 00 0000 0000 0000 0000 9c00 0000 5500", 4,
     ControllerState(0, ControllerButton.DPAD_UP)),
    # controller 1's bit cleared in the mask: it was unplugged
    ("0000001e 0c000000 1a00 0100 0100 1400 0000 00 00 0000 0000 0000 0000 9c00 0000 5500", 7,
     ControllerRemoval(1)),
    # generation 3: one controller, no number
    ("00000018 0a000000 0014 0020 10 20 0100 0200 0300 0400 9c000000 5500", 3,
     ControllerState(0, ControllerButton.B, 16, 32, 1, 2, 3, 4)),
    # touch down, pointer 7 at (0.5, 0.25), pressure 1.0, contact 0, rotation unknown
    ("00000020 02000055 01 00 ffff 07000000 0000003f 0000803e 0000803f 00000000 00000000", 7,
     Touch(7, TouchPhase.DOWN, 0.5, 0.25, 1.0, 0.0, 0.0, None)),
    # pen move, eraser, primary button, (0.75, 0.5), pressure 0.5, rotation 90, tilt 45
    ("00000020 03000055 03 02 01 00 0000403f 0000003f 0000003f 5a00 2d 00 00000000 00000000", 7,
     Pen(TouchPhase.MOVE, PenTool.ERASER, PenButton.PRIMARY, 0.75, 0.5, 0.5, 0.0, 0.0, 90, 45)),
    # pad 2 arrives: PlayStation, rumble + gyro, buttons A|B|X|Y
    ("0000000c 04000055 02 02 2200 00f00000", 7,
     ControllerArrival(2, ControllerType.PLAYSTATION, ControllerCapability.RUMBLE | ControllerCapability.GYROSCOPE,
                       ControllerButton.A | ControllerButton.B | ControllerButton.X | ControllerButton.Y)),
    ("00000018 05000055 00 03 00 01 09000000 0000803e 0000803e 0000003f", 7,
     ControllerTouch(0, TouchPhase.MOVE, 9, 0.25, 0.25, 0.5, pad=1)),
    ("00000014 06000055 03 01 0000 00000000 00000000 00001c41", 7,
     ControllerMotion(3, MotionSensor.ACCELEROMETER, 0.0, 0.0, 9.75)),
    ("00000008 07000055 00 02 50 00", 7, ControllerBattery(0, BatteryState.DISCHARGING, 80)),
]


@pytest.mark.parametrize("packet, generation, event", VECTORS, ids=[type(v[2]).__name__ for v in VECTORS])
def test_fixed_packets_decode_to_their_events(packet, generation, event):
    assert parse_input(H(packet), generation) == event


ENCODABLE = [v for v in VECTORS if v[1] >= 4 and v[2] != Key(0xA0, False)]  # not the extra high byte


@pytest.mark.parametrize("packet, generation, event", ENCODABLE, ids=[type(v[2]).__name__ for v in ENCODABLE])
def test_the_encoder_builds_the_fixed_packets(packet, generation, event):
    # the controller vectors were sent while pads 0 and 1 were plugged in
    mask = 0x3 if isinstance(event, (ControllerState, ControllerRemoval)) and event.number == 1 else None
    assert encode_input(event, generation, active_mask=mask) == H(packet)


def test_generation_decides_what_a_packet_type_means():
    # 0x0d is "haptics on" for a generation-7 client, a controller state for an older one
    assert parse_input(H("00000006 0d000000 0100"), 7) == HapticsEnable(True)
    with pytest.raises(MalformedInput):
        parse_input(H("00000006 0d000000 0100"), 4)  # a 2-byte controller packet is no controller
    # 0x09 is a button release now and was a scroll before
    assert parse_input(H("00000005 09000000 01"), 7) == Button(MouseButton.LEFT, False)
    with pytest.raises(MalformedInput):
        parse_input(H("00000005 09000000 01"), 4)


# ---- malformed packets --------------------------------------------------------------------------

MALFORMED = [
    ("", "shorter than its header"),
    ("00000004 03", "shorter than its header"),
    ("0000000b 03000000 00 4100 01 0000", "say"),  # the length says one byte more than there is
    ("00000009 03000000 00 4100 01 00", "not 6"),  # a short body
    ("0000000b 03000000 00 4100 01 0000 00", "not 6"),  # a long body
    ("00000004 99000000", "unknown input packet type 0x99"),
    ("0000000a 03000000 00 0000 00 0000", "virtual-key code 0"),
    ("0000000e 05000000 0140 00b4 0000 0000 0167", "reference size"),
    ("00000005 08000000 06", "mouse button 6"),
    ("00000005 08000000 00", "mouse button 0"),
    ("00000006 17000000 c328", "not UTF-8"),
    ("00000005 17000000 07", "control characters"),
    ("00000004 17000000", "0 bytes"),
    ("00000025 17000000" + "61" * 33, "33 bytes"),
    ("0000001e 0c000000 1a00 1000 ffff 1400 0000 00 00 0000 0000 0000 0000 9c00 0000 5500", "controller number 16"),
    ("00000020 02000055 08 00 ffff 07000000 0000003f 0000803e 0000803f 00000000 00000000", "touch event 8"),
    ("00000020 02000055 01 00 6801 07000000 0000003f 0000803e 0000803f 00000000 00000000", "rotation 360"),
    ("00000020 02000055 01 00 ffff 07000000 0000c07f 0000803e 0000803f 00000000 00000000", "not a finite"),
    ("00000020 03000055 03 03 01 00 0000403f 0000003f 0000003f 5a00 2d 00 00000000 00000000", "pen tool 3"),
    ("00000020 03000055 03 01 08 00 0000403f 0000003f 0000003f 5a00 2d 00 00000000 00000000", "pen buttons"),
    ("00000020 03000055 03 01 01 00 0000403f 0000003f 0000003f 5a00 5b 00 00000000 00000000", "tilt 91"),
    ("0000000c 04000055 10 01 0000 00000000", "controller number 16"),
    ("00000018 05000055 00 03 00 02 09000000 0000803e 0000803e 0000003f", "touchpad 2"),
    ("00000014 06000055 00 03 0000 00000000 00000000 00000000", "motion sensor 3"),
    ("00000014 06000055 00 01 0000 0000807f 00000000 00000000", "not a finite"),
    ("00000008 07000055 00 06 50 00", "battery state 6"),
    ("00000008 07000055 00 02 65 00", "battery percentage 101"),
]


@pytest.mark.parametrize("packet, reason", MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_packets_raise_the_one_exception_naming_the_problem(packet, reason):
    with pytest.raises(MalformedInput, match=reason.replace("(", r"\(")):
        parse_input(H(packet))


@pytest.mark.parametrize("packet, generation, event", VECTORS, ids=[type(v[2]).__name__ for v in VECTORS])
def test_every_truncation_of_a_valid_packet_is_malformed(packet, generation, event):
    data = H(packet)
    for n in range(len(data)):
        with pytest.raises(MalformedInput):
            parse_input(data[:n], generation)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([3, 4, 7]))
def test_no_byte_string_raises_anything_but_malformed_input(data, generation):
    try:
        parse_input(data, generation)
    except MalformedInput:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0x03, 0x05, 0x07, 0x08, 0x0A, 0x0C, 0x17, 0x55000002, 0x55000003, 0x55000004,
                        0x55000005, 0x55000006, 0x55000007]),
       st.binary(min_size=0, max_size=40))
def test_random_bodies_of_known_packet_types_parse_or_raise_malformed_input(magic, body):
    packet = struct.pack(">I", len(body) + 4) + struct.pack("<I", magic) + body
    try:
        parse_input(packet)
    except MalformedInput:
        pass


# ---- round trips --------------------------------------------------------------------------------

s16 = st.integers(-32768, 32767)
unit = st.floats(0.0, 1.0, width=32)
controller = st.integers(0, 15)
rotation = st.one_of(st.none(), st.integers(0, 359))

EVENTS = st.one_of(
    st.builds(Key, st.integers(1, 254), st.booleans(), st.builds(Modifier, st.integers(0, 15))),
    st.builds(PointerPosition, s16, s16, st.integers(1, 32767), st.integers(1, 32767)),
    st.builds(PointerMove, s16, s16),
    st.builds(Button, st.sampled_from(list(MouseButton)), st.booleans()),
    st.builds(Scroll, s16, st.booleans()),
    st.builds(ControllerState, controller, st.builds(ControllerButton, st.integers(0, 0xFFFFFFFF)),
              st.integers(0, 255), st.integers(0, 255), s16, s16, s16, s16),
    st.builds(ControllerRemoval, controller),
    st.builds(Text, st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs", "Cc")),
                            min_size=1, max_size=8).filter(lambda t: len(t.encode()) <= 32)),
    st.builds(Touch, st.integers(0, 0xFFFFFFFF), st.sampled_from(list(TouchPhase)), unit, unit, unit, unit, unit,
              rotation),
    st.builds(Pen, st.sampled_from(list(TouchPhase)), st.sampled_from(list(PenTool)),
              st.builds(PenButton, st.integers(0, 7)), unit, unit, unit, unit, unit, rotation,
              st.one_of(st.none(), st.integers(0, 90))),
    st.builds(ControllerArrival, controller, st.sampled_from(list(ControllerType)),
              st.builds(ControllerCapability, st.integers(0, 0xFFFF)),
              st.builds(ControllerButton, st.integers(0, 0xFFFFFFFF))),
    st.builds(ControllerTouch, controller, st.sampled_from(list(TouchPhase)), st.integers(0, 0xFFFFFFFF),
              unit, unit, unit, st.integers(0, 1)),
    st.builds(ControllerMotion, controller, st.sampled_from(list(MotionSensor)),
              *[st.floats(-1e6, 1e6, width=32)] * 3),
    st.builds(ControllerBattery, controller, st.sampled_from(list(BatteryState)),
              st.one_of(st.integers(0, 100), st.just(255))),
    st.builds(HapticsEnable, st.booleans()),
)


@settings(max_examples=1000, deadline=None)
@given(EVENTS)
def test_every_event_survives_encode_and_parse(event):
    assert parse_input(encode_input(event)) == event


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.builds(PointerMove, s16, s16), st.builds(Button, st.sampled_from(list(MouseButton)),
                                                             st.booleans()),
                 st.builds(Scroll, s16), st.builds(ControllerState, controller, st.builds(
                     ControllerButton, st.integers(0, 0xFFFFFFFF)), st.integers(0, 255), st.integers(0, 255),
                     s16, s16, s16, s16)))
def test_the_older_packet_numbers_round_trip_too(event):
    assert parse_input(encode_input(event, generation=4), generation=4) == event


# ---- feedback -----------------------------------------------------------------------------------


def test_feedback_messages_have_the_layouts_moonlight_reads():
    assert encode_feedback(Rumble(1, 0x1234, 0xFFFF)) == (0x010B, H("00000000 0100 3412 ffff"))
    assert encode_feedback(TriggerRumble(2, 0x8000, 1)) == (0x5500, H("0200 0080 0100"))
    assert encode_feedback(MotionEventRate(3, MotionSensor.GYROSCOPE, 250)) == (0x5501, H("0300 fa00 02"))
    assert encode_feedback(ControllerLed(15, 255, 128, 0)) == (0x5502, H("0f00 ff 80 00"))
    with pytest.raises(TypeError):
        encode_feedback(Key(0x41, True))  # type: ignore[arg-type]


# ---- the framing without an encrypted control stream -------------------------------------------


def test_legacy_encrypted_input_opens_in_order_and_follows_the_iv_chain():
    key = bytes(range(16))
    client, host = LegacyInputCipher(key, 0x01020304), LegacyInputCipher(key, 0x01020304)
    assert host.iv == H("01020304") + bytes(12)
    packets = [encode_input(e) for e in (Key(0x41, True), PointerPosition(1, 2, 3, 4), Text("héllo"),
                                         ControllerState(0, left_x=5), PointerMove(1, 1), Key(0x41, False))]
    for p in packets:
        before = host.iv
        msg = client.seal(p)
        assert struct.unpack(">I", msg[:4])[0] == len(msg) - 4 == 16 + len(p)
        assert host.open(msg) == p
        # a packet of 16 bytes or more moves the IV to the message's last 16 bytes; a shorter one keeps it
        assert host.iv == (msg[-16:] if len(p) >= 16 else before) == client.iv
    assert [len(p) >= 16 for p in packets] == [False, True, False, True, False, False]


def test_legacy_encrypted_input_that_does_not_authenticate_is_malformed_and_changes_nothing():
    key = bytes(16)
    client, host = LegacyInputCipher(key, 7), LegacyInputCipher(key, 7)
    msg = bytearray(client.seal(encode_input(PointerPosition(1, 2, 3, 4))))
    iv = host.iv
    msg[10] ^= 1
    with pytest.raises(MalformedInput, match="authenticate"):
        host.open(bytes(msg))
    assert host.iv == iv
    with pytest.raises(MalformedInput, match="too short"):
        host.open(b"\x00\x00\x00\x10" + bytes(16))
    with pytest.raises(MalformedInput, match="says"):
        host.open(b"\x00\x00\x00\x40" + bytes(30))
