"""How punktfunk/1 reports the runner's steps: four stages, 2 s windows.

``send`` is packetize + transmit (FEC, sealing and the paced socket writes
together, split in ``detail`` and in the batch's ``fec``/``seal``/``sock``
means); the window matches the client's report interval
(docs/protocol-native.md, "Stats").
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

NATIVE_LAYOUT = StageLayout(
    kind="native",
    window_s=2.0,
    stages=(
        ("capture", (STEP_CAPTURE,)),
        ("encode", (STEP_SUBMIT, STEP_RECEIVE)),
        ("queue", (STEP_QUEUE,)),
        ("send", (STEP_PACKETIZE, STEP_SEND)),
    ),
    detail=(*ENCODE_SPLIT, ("send.packetize", (STEP_PACKETIZE,)), ("send.transmit", (STEP_SEND,))),
)
