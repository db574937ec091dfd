"""What ``punktfunk doctor`` says about GameStream: whether it is on (it is
opt-in), the ISA-L FEC it encodes with, and the ports its ``port_base`` opens."""

from __future__ import annotations

from typing import Any

from punktfunk_core.doctor import INFO, OK, WARN, Finding, Port

SECTION = "gamestream"
#: the ports Moonlight sends to; the others (HTTP, HTTPS, RTSP) are TCP
UDP = frozenset({"video", "control", "audio"})


def findings(config: dict[str, Any]) -> list[Finding]:
    from punktfunk_gamestream import fec

    line = fec.describe()
    out = [Finding("isa-l", OK, f"GameStream FEC: {line}") if isinstance(fec.best_kernel(), fec.IsalKernel) else
           Finding("isa-l", WARN, f"GameStream FEC: {line}",
                   "pip install the pinned pyeclib wheel again, or apt-get install libisal2")]
    if config.get(SECTION, {}).get("enabled"):
        out.append(Finding(SECTION, INFO, "GameStream enabled: Moonlight clients can pair (plain HTTP pairing)"))
    else:
        out.append(Finding(SECTION, INFO, "GameStream is off (opt-in)",
                           "for Moonlight clients: punktfunk serve --gamestream, or [gamestream] enabled = true"))
    return out


def ports(config: dict[str, Any]) -> list[Port]:
    section = config.get(SECTION, {})
    if not (section.get("enabled") and section.get("port_base")):
        return []
    from punktfunk_gamestream.plane import PORT_OFFSETS

    base, bind = int(section["port_base"]), str(section.get("bind", "0.0.0.0"))
    return [Port(SECTION, f"gamestream {name}", "udp" if name in UDP else "tcp", bind, base + offset)
            for name, offset in PORT_OFFSETS.items()]
