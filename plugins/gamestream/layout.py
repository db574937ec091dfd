"""How GameStream sessions report the runner's steps: five stages, 1 s windows.

``send_spread`` (how long the paced sender took to put a frame's packets on
the wire) is measured by the sender itself and reported in ``detail``
(docs/gamestream.md, "Sessions and stats").
"""

from __future__ import annotations

from punktfunk_core.window import (
    ENCODE_SPLIT,
    STEP_CAPTURE,
    STEP_PACKETIZE,
    STEP_QUEUE,
    STEP_RECEIVE,
    STEP_SEND,
    STEP_SUBMIT,
    StageLayout,
)

GAMESTREAM_LAYOUT = StageLayout(
    kind="gamestream",
    window_s=1.0,
    stages=(
        ("capture", (STEP_CAPTURE,)),
        ("encode", (STEP_SUBMIT, STEP_RECEIVE)),
        ("queue", (STEP_QUEUE,)),
        ("packetize", (STEP_PACKETIZE,)),
        ("send", (STEP_SEND,)),
    ),
    extra_stages=("send_spread",),
    detail=ENCODE_SPLIT,
)
