"""Entry point of the gamestream plugin: GameStream / Moonlight compatibility (opt-in).

Hooks: the ``gamestream`` config section, the ``gamestream`` packetizer and
sender stages, the protocol plane (it pairs through the core's pairing
contract: ``pairing.*`` IPC, the console's pairing bridge), ``punktfunk
gamestream …`` commands, the ``gamestream.status``/``gamestream.cancel`` IPC
commands and the console's status route.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from punktfunk_core import hookimpl
from punktfunk_core.adaptive import AdaptiveSettings
from punktfunk_core.ipc import IpcError, connect
from punktfunk_core.settings import LIVE_NEW_SESSIONS, setting


@dataclass(frozen=True, kw_only=True)
class GameStreamSettings(AdaptiveSettings):
    """GameStream/Moonlight compatibility (opt-in; pairing runs over plain HTTP)."""

    enabled: bool = setting(False, "serve Moonlight clients (also: punktfunk serve --gamestream)")
    bind: str = setting("0.0.0.0", "address the GameStream ports listen on")
    port_base: int = setting(47989, "HTTP port; the others follow GameStream's offsets (0 = ephemeral ports, "
                                    "see `punktfunk gamestream status`)", minimum=0, maximum=65500)
    mdns: bool = setting(True, "advertise _nvstream._tcp via mDNS")
    fec_percent: int = setting(20, "video FEC parity in percent of data packets (fec = fixed)", minimum=0,
                               maximum=100, live=LIVE_NEW_SESSIONS)
    fec_threads: int = setting(1, "threads the ISA-L FEC encoder splits a large frame over (small frames stay "
                                  "on one)", minimum=1, maximum=16, live=LIVE_NEW_SESSIONS)
    gso: bool = setting(True, "batch each paced group of video datagrams into UDP GSO sends where the kernel "
                              "supports it", live=LIVE_NEW_SESSIONS)
    pacing: float = setting(0.5, "fraction of a frame interval a frame's packets are spread over",
                            minimum=0, maximum=1, live=LIVE_NEW_SESSIONS)
    pin_timeout_s: float = setting(60.0, "how long a pairing client waits for the operator's PIN",
                                   minimum=5, maximum=600)
    request_timeout_s: float = setting(5.0, "an HTTP, HTTPS or RTSP connection is closed when its request has not "
                                            "arrived this long after accept, or its answer not gone out this long "
                                            "after that (a pairing request waiting for the PIN is exempt)",
                                       minimum=0.5, maximum=120)
    connections_per_source: int = setting(8, "connections per client address still sending their request, per "
                                             "port (HTTP, HTTPS, RTSP); a new one beyond this closes the oldest",
                                          minimum=1, maximum=64)
    client_timeout_s: float = setting(10.0, "end a stream whose client sent nothing on the control stream for "
                                            "this long", minimum=1, maximum=300)
    require_encryption: bool = setting(False, "ask clients to encrypt video and audio even if they would not",
                                       live=LIVE_NEW_SESSIONS)
    audio: bool = setting(True, "stream audio (audio_source → Opus, in the channels the client asks for)",
                          live=LIVE_NEW_SESSIONS)
    audio_source: str = setting("auto", "audio_source stage name: auto (the desktop's sound when a sound server "
                                        "answers, else the tone), desktop, tone", stage="audio_source")
    # the stages of a session (docs/plugins.md, "Replacing or wrapping a protocol's stages")
    video_packetizer: str = setting("gamestream", "packetizer stage for video (a plugin's stage may replace or "
                                                  "wrap the builtin)", stage="packetizer")
    video_sender: str = setting("gamestream", "sender stage for video (a plugin's stage may replace or wrap the "
                                              "builtin)", stage="sender")
    audio_packetizer: str = setting("gamestream-audio", "packetizer stage for audio (a plugin's stage may "
                                                        "replace or wrap the builtin)", stage="packetizer")
    audio_sender: str = setting("gamestream", "sender stage for audio (a plugin's stage may replace or wrap the "
                                              "builtin)", stage="sender")
    video_packetizer_options: Mapping[str, Any] = setting(
        {}, "options for the video packetizer stage (the plane adds the negotiated stream as option 'context')")
    video_sender_options: Mapping[str, Any] = setting(
        {}, "options for the video sender stage (the plane adds the negotiated stream as option 'context')")
    audio_packetizer_options: Mapping[str, Any] = setting(
        {}, "options for the audio packetizer stage (the plane adds the negotiated stream as option 'context')")
    audio_sender_options: Mapping[str, Any] = setting(
        {}, "options for the audio sender stage (the plane adds the negotiated stream as option 'context')")


@hookimpl
def config_schema(register: Callable[[str, dict[str, Any]], None]) -> None:
    register("gamestream", GameStreamSettings.schema())


def _packetizer(spec: Any, options: dict[str, Any]) -> Any:
    from punktfunk_gamestream.video import GameStreamPacketizer

    return GameStreamPacketizer(spec, options)


def _sender(spec: Any, options: dict[str, Any]) -> Any:
    from punktfunk_gamestream.video import GameStreamSender

    return GameStreamSender(spec, options)


def _audio_packetizer(spec: Any, options: dict[str, Any]) -> Any:
    from punktfunk_gamestream.audio import GameStreamAudioPacketizer

    return GameStreamAudioPacketizer(spec, options)


@hookimpl
def register_stages(registry: Any) -> None:
    from punktfunk_gamestream import fec

    registry.add("packetizer", "gamestream", _packetizer,
                 description=f"GameStream RTP video: NV headers, multi-block nanors FEC ({fec.describe()}), "
                             "optional AES-GCM")
    registry.add("packetizer", "gamestream-audio", _audio_packetizer,
                 description="GameStream RTP audio: one Opus packet each, RS(4,2) FEC, optional AES-CBC")
    registry.add("sender", "gamestream", _sender,
                 description="UDP to the endpoint a Moonlight client pinged from (video paced, audio not)")


@hookimpl
def register_protocols(registry: Any) -> None:
    from punktfunk_gamestream.plane import GameStreamPlane

    registry.add("gamestream", GameStreamPlane)


# -- IPC ---------------------------------------------------------------------------
def _plane(host: Any) -> Any:
    plane = host.planes.get("gamestream")
    if plane is None:
        raise IpcError(409, "GameStream is not enabled (start the host with `punktfunk serve --gamestream`)")
    return plane


@hookimpl
def ipc_commands(host: Any, register: Callable[..., None]) -> None:
    def status(_args: dict) -> dict:
        from punktfunk_gamestream import fec

        return {**_plane(host).status(), "fec": {**fec.best_kernel().describe(), "summary": fec.describe()}}

    def cancel(_args: dict) -> dict:
        plane = _plane(host)
        running = plane.launch is not None
        plane.cancel_launch("ended by the operator")
        return {"cancelled": running}

    register("gamestream.cancel", cancel)
    register("gamestream.status", status)


# -- CLI -----------------------------------------------------------------------------
def _cmd_pin(args: argparse.Namespace) -> int:
    res = connect().call("pairing.pin", protocol="gamestream", pin=args.pin)
    print(f"PIN sent; {res.get('device', 'the client')} is pairing")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    st = connect().call("gamestream.status")
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print("ports: " + ", ".join(f"{k} {v}" for k, v in st["ports"].items()))
    if st.get("pairing"):
        print(f"waiting for a PIN: {st['pairing']['device']} ({st['pairing']['waiting_s']} s)")
    print(f"paired clients: {len(st['paired_clients'])}")
    for c in st["paired_clients"]:
        print(f"  {c['name']}  {c['fingerprint'][:16]}…")
    print(f"app running: {'yes' if st['app_running'] else 'no'}; streaming: {'yes' if st['streaming'] else 'no'}")
    if st.get("fec"):
        print(f"FEC: {st['fec']['summary']}")
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    res = connect().call("gamestream.cancel")
    print("app ended" if res["cancelled"] else "no app was running")
    return 0


def _cmd_unpair(args: argparse.Namespace) -> int:
    res = connect().call("pairing.unpair", protocol="gamestream",
                         **({"all": True} if args.all else {"fingerprint": args.fingerprint or ""}))
    print(f"removed {res['removed']} paired client(s)")
    return 0


@hookimpl
def cli_commands(subparsers: Any) -> None:
    serve = subparsers.choices.get("serve")
    if serve is not None:  # the shorthand the docs and Moonlight guides use for --enable gamestream
        serve.add_argument("--gamestream", dest="enable", action="append_const", const="gamestream",
                           help="enable GameStream/Moonlight compatibility (opt-in; --enable gamestream)")
    p = subparsers.add_parser("gamestream", help="GameStream/Moonlight: enter a pairing PIN, show status")
    sub = p.add_subparsers(dest="gamestream_command", metavar="ACTION", required=True)
    c = sub.add_parser("pin", help="enter the 4-digit PIN a Moonlight client shows while pairing")
    c.add_argument("pin", metavar="PIN")
    c.set_defaults(func=_cmd_pin)
    c = sub.add_parser("status", help="ports, pairing state, paired clients")
    c.add_argument("--json", action="store_true", help="print gamestream.status as JSON")
    c.set_defaults(func=_cmd_status)
    c = sub.add_parser("cancel", help="end the running app (its client is told the stream ended)")
    c.set_defaults(func=_cmd_cancel)
    c = sub.add_parser("unpair", help="forget a paired client (by fingerprint prefix) or all of them")
    c.add_argument("fingerprint", nargs="?")
    c.add_argument("--all", action="store_true")
    c.set_defaults(func=_cmd_unpair)


# -- console -----------------------------------------------------------------------------
@hookimpl
def console_routes(register: Any, ipc: Any) -> None:
    from flask import Blueprint, jsonify

    def status_view() -> Any:
        try:
            return jsonify(ipc.call("gamestream.status"))
        except IpcError as exc:
            return jsonify({"error": exc.message}), exc.code

    register("/api/v1/gamestream/status", status_view, methods=["GET"], lane="admin")
    # its card on the Pairing page, also while GameStream is off (it says how to turn it on)
    bp = Blueprint("gamestream", __name__, static_folder="static")
    register.blueprint(bp)
    register.script("pairing", "pairing-card.js", bp)


@hookimpl
def doctor_findings(config: dict[str, Any], register: Callable[..., None]) -> None:
    from punktfunk_gamestream import doctor

    for finding in doctor.findings(config):
        register(finding)


@hookimpl
def listening_ports(config: dict[str, Any], register: Callable[..., None]) -> None:
    from punktfunk_gamestream import doctor

    for port in doctor.ports(config):
        register(port)
