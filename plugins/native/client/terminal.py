"""What the person at the terminal sees of a client run: messages, the live
status line (redrawn in place) and the closing summary in words."""

from __future__ import annotations

import sys
from typing import Any


class Terminal:
    """Messages go to stdout, or to stderr under ``--json`` (stdout is then the
    JSON summary); ``live`` draws a status line twice a second."""

    def __init__(self, json: bool = False, live: bool = True) -> None:
        self.json = json
        self.live = live and not json
        self._status_open = False  # a live status line without its newline yet

    def say(self, text: str) -> None:
        self.end_status_line()
        print(text, file=sys.stderr if self.json else sys.stdout, flush=True)

    def status(self, s: dict[str, Any]) -> None:
        """Redraw the live status line from a summary (``NativeClient.summary()``)."""
        if not self.live:
            return
        line = (f"{s['fps']:6.1f} fps  {s['mbps']:7.2f} Mb/s  lost {s['packets_lost']:5d}  recovered "
                f"{s['shards_recovered']:5d}  unrecoverable {s['frames_unrecoverable']:3d}  e2e p50 "
                f"{s['e2e_p50_ms'] if s['e2e_p50_ms'] is not None else '-':>6} ms  p99 "
                f"{s['e2e_p99_ms'] if s['e2e_p99_ms'] is not None else '-':>6} ms")
        sys.stdout.write("\r" + line)
        sys.stdout.flush()
        self._status_open = True

    def end_status_line(self) -> None:
        """Move off the live status line (it is redrawn in place with \\r)."""
        if self._status_open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._status_open = False


def summary_text(s: dict[str, Any], session_id: int | None, host_bye: str | None, rtt_us: float | None) -> str:
    """The closing summary, in words."""
    how = {None: "", "connection closed": " (the host closed the connection)"}.get(
        host_bye, f" (the host ended it: {host_bye})")
    e2e = (f", end to end p50 {s['e2e_p50_ms']:.1f} ms / p99 {s['e2e_p99_ms']:.1f} ms"
           if s["e2e_p50_ms"] is not None else "")
    rtt = f", round trip {rtt_us / 1000:.1f} ms" if rtt_us is not None else ""
    if s.get("click_to_photon_p50_ms") is not None:
        rtt += (f", click to photon p50 {s['click_to_photon_p50_ms']:.1f} ms"
                f" / p99 {s['click_to_photon_p99_ms']:.1f} ms "
                f"({s['click_to_photon_samples']} moves, {s['click_to_photon_missed']} missed)")
    return (f"session {session_id if session_id is not None else '?'} ended{how}: "
            f"{s['frames_decoded']} of {s['frames_expected']} frames decoded ({s['fps']:.1f} fps), "
            f"{s['mbps']:.2f} Mb/s; packets lost {s['packets_lost']}, recovered by FEC {s['shards_recovered']}, "
            f"frames unrecoverable {s['frames_unrecoverable']}{e2e}{rtt}")
