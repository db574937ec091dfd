"""What ``punktfunk doctor`` says about punktfunk/1: its C batch sealer, and the
ports the ``native`` section opens (TCP control, UDP data)."""

from __future__ import annotations

from typing import Any

from punktfunk_core.doctor import OK, WARN, Finding, Port

SECTION = "native"


def findings(config: dict[str, Any]) -> list[Finding]:
    from punktfunk_native.datapath import batch_sealer_available

    if batch_sealer_available():
        return [Finding("sealer", OK, "the C batch sealer of punktfunk/1 is built")]
    return [Finding("sealer", WARN, "the C batch sealer is not built: punktfunk/1 seals packet by packet (slower)",
                    "apt-get install gcc libssl-dev, then pip install . again")]


def ports(config: dict[str, Any]) -> list[Port]:
    section = config.get(SECTION, {})
    if not section.get("enabled"):
        return []
    bind = str(section.get("bind", "0.0.0.0"))
    return [Port(SECTION, "native control", "tcp", bind, int(section.get("port") or 0),
                 chosen="the control port `punktfunk status` shows"),
            Port(SECTION, "native data", "udp", bind, int(section.get("data_port") or 0),
                 chosen="native data (a free port per session: set native.data_port to open one)")]
