"""``GET /metrics``: the host's live numbers in Prometheus text format.

Every scrape asks the host over IPC (``host.status``, ``sessions.list`` and,
when the host has it, ``host.metrics``); nothing is cached in the console, so
any worker answers the same. Latencies are exported in seconds (Prometheus'
base unit), rates per second; the per-window counters are gauges holding the
last window's count, since a window is what the host measures.

An unreachable host is not a failed scrape: ``punktfunk_host_up`` is 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from punktfunk_core.ipc import HostUnreachable, IpcClient, IpcError
from punktfunk_core.stats import COUNT_FIELDS

log = logging.getLogger("punktfunk.console.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
SESSION_LABELS = ["session", "kind", "client", "codec", "encoder"]
#: optional sample fields in µs exported as seconds: field -> (metric suffix, help)
_US_FIELDS = {
    "host_p50_us": ("host_latency_p50_seconds", "capture to last packet sent, window p50"),
    "host_p99_us": ("host_latency_p99_seconds", "capture to last packet sent, window p99"),
    "rtt_us": ("round_trip_seconds", "smoothed round trip reported by the client"),
    "fec_us": ("fec_seconds", "mean time per frame spent on FEC"),
    "seal_us": ("seal_seconds", "mean time per frame spent on encryption"),
    "sock_us": ("socket_seconds", "mean time per frame spent in socket sends"),
}


#: host.metrics keys already exported from host.status
_COVERED_BY_STATUS = frozenset({"uptime_ms", "sessions", "measuring"})
_OWN_HOST_METRICS = frozenset({"punktfunk_host_up", "punktfunk_host_info", "punktfunk_host_uptime_seconds",
                               "punktfunk_host_sessions", "punktfunk_host_measuring"})


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


class HostCollector:
    """A prometheus_client collector that reads the host through IPC on collect()."""

    def __init__(self, ipc: IpcClient) -> None:
        self.ipc = ipc

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("punktfunk_host_up", "1 when the console reached the host over IPC")
        try:
            status = self.ipc.call("host.status")
            sessions = self.ipc.call("sessions.list")
        except IpcError as exc:
            if not isinstance(exc, HostUnreachable):
                log.warning("metrics: host answered %s: %s", exc.code, exc.message)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._host(status)
        yield from self._sessions(sessions if isinstance(sessions, list) else [])
        yield from self._extra()

    def _host(self, st: dict[str, Any]) -> Iterable[Metric]:
        info = GaugeMetricFamily("punktfunk_host_info", "the host's version and name", labels=["version", "hostname"])
        info.add_metric([str(st.get("version", "")), str(st.get("hostname", ""))], 1)
        yield info
        for key, name, doc, scale in (
            ("uptime_ms", "punktfunk_host_uptime_seconds", "time since the host started", 1e-3),
            ("sessions", "punktfunk_host_sessions", "running sessions", 1.0),
            ("measuring", "punktfunk_host_measuring", "1 while per-frame measurement is on", 1.0),
        ):
            v = _num(st.get(key)) if key != "measuring" else float(bool(st.get(key)))
            if v is not None:
                yield GaugeMetricFamily(name, doc, value=v * scale)
        protos = GaugeMetricFamily("punktfunk_protocol_enabled", "protocol planes running in the host",
                                   labels=["protocol"])
        for name in sorted(st.get("protocols", {}) or {}):
            protos.add_metric([str(name)], 1)
        yield protos

    def _sessions(self, sessions: list[dict[str, Any]]) -> Iterable[Metric]:
        # two gauges, not a "quantile" label: that label belongs to summaries (promtool check metrics)
        stage = {key: GaugeMetricFamily(f"punktfunk_stage_latency_{q}_seconds",
                                        f"per-stage latency of the last window, {q}",
                                        labels=[*SESSION_LABELS, "stage"])
                 for q, key in (("p50", "p50_us"), ("p99", "p99_us"))}
        fps = GaugeMetricFamily("punktfunk_session_fps", "new source frames per second (last window)",
                                labels=SESSION_LABELS)
        repeat = GaugeMetricFamily("punktfunk_session_repeat_fps", "re-sent frames per second (last window)",
                                   labels=SESSION_LABELS)
        # bytes, Prometheus' base unit (promtool refuses "bits"); Grafana shows them ×8 as bit/s
        wire = GaugeMetricFamily("punktfunk_session_wire_bytes_per_second",
                                 "attempted wire rate incl. framing and FEC (last window)", labels=SESSION_LABELS)
        target = GaugeMetricFamily("punktfunk_session_target_bytes_per_second", "encoder target bitrate",
                                   labels=SESSION_LABELS)
        counters = {f: GaugeMetricFamily(f"punktfunk_session_window_{f}", f"{f.replace('_', ' ')} in the last window",
                                         labels=SESSION_LABELS) for f in sorted(COUNT_FIELDS)}
        extras = {f: GaugeMetricFamily(f"punktfunk_session_{m}", h + " (last window)", labels=SESSION_LABELS)
                  for f, (m, h) in _US_FIELDS.items()}
        for s in sessions:
            if not isinstance(s, dict):
                continue
            labels = [str(s.get("id", "")), str(s.get("kind", "")), str(s.get("client", "")),
                      str(s.get("codec", "")), str(s.get("encoder_backend", ""))]
            kbps = _num(s.get("bitrate_kbps"))
            if kbps is not None:
                target.add_metric(labels, kbps * 1000 / 8)
            sample = s.get("last_sample")
            if not isinstance(sample, dict):
                continue
            for st in sample.get("stages", []) or []:
                if not isinstance(st, dict):
                    continue
                for key, fam in stage.items():
                    v = _num(st.get(key))
                    if v is not None:
                        fam.add_metric([*labels, str(st.get("name", ""))], v / 1e6)
            for fam, key, scale in ((fps, "fps", 1.0), (repeat, "repeat_fps", 1.0), (wire, "mbps", 1e6 / 8)):
                v = _num(sample.get(key))
                if v is not None:
                    fam.add_metric(labels, v * scale)
            for f, fam in counters.items():
                v = _num(sample.get(f))
                if v is not None:
                    fam.add_metric(labels, v)
            for f, fam in extras.items():
                v = _num(sample.get(f))
                if v is not None:
                    fam.add_metric(labels, v / 1e6)
        yield from (*stage.values(), fps, repeat, wire, target, *counters.values(), *extras.values())

    def _extra(self) -> Iterable[Metric]:
        """Host-wide counters from ``host.metrics`` when the host offers the command:
        ``{"counters": {name: n}, other numeric keys...}``."""
        try:
            extra = self.ipc.call("host.metrics")
        except IpcError as exc:
            if exc.code != 404:
                log.debug("host.metrics failed: %s", exc.message)
            return
        if not isinstance(extra, dict):
            return
        counters = extra.get("counters")
        if isinstance(counters, dict):
            fam = CounterMetricFamily("punktfunk_host_events", "host event counters (e.g. bad IPC requests)",
                                      labels=["counter"])
            for key in sorted(counters):
                v = _num(counters[key])
                if v is not None:
                    fam.add_metric([str(key)], v)
            yield fam
        for key in sorted(extra):
            if key in _COVERED_BY_STATUS or key == "counters":
                continue
            v = _num(extra[key])
            name = "punktfunk_host_" + "".join(c if c.isalnum() else "_" for c in str(key)).strip("_").lower()
            if v is not None and name != "punktfunk_host_" and name not in _OWN_HOST_METRICS:
                yield GaugeMetricFamily(name, f"host value {key}", value=v)


def render(ipc: IpcClient) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(ipc))  # type: ignore[arg-type]
    return generate_latest(registry)
