"""``punktfunk client HOST``: the arguments, the run, the exit status."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from punktfunk_native.client.impair import LossPattern
from punktfunk_native.client.inputscript import InputScriptError, load_input_script
from punktfunk_native.client.session import (
    DEFAULT_PORT,
    EXIT_OK,
    ClientError,
    ClientOptions,
    NativeClient,
    PairingFailed,
)
from punktfunk_native.client.terminal import summary_text


def add_client_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", metavar="HOST", help="host name or address (HOST or HOST:PORT)")
    p.add_argument("--port", type=int, default=None, help=f"control port (default {DEFAULT_PORT})")
    p.add_argument("--pin", help="pair with this PIN first if not paired yet")
    p.add_argument("--seconds", type=float, default=0.0,
                   help="stream this long, then print a summary (0 = until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print one JSON summary object at the end, no live status")
    p.add_argument("--save-frames", metavar="DIR", help="save every decoded frame as PNG into DIR")
    p.add_argument("--loss", type=float, default=0.0, help="drop this fraction of received datagrams (testing FEC)")
    p.add_argument("--loss-seed", type=int, default=None, help="seed of the loss injection")
    p.add_argument("--loss-pattern", metavar="PATTERN", default=None,
                   help="drop received datagrams by a pattern instead: uniform:RATE, or ge:P,R,H (Gilbert-Elliott "
                        "bursts: good→bad P, bad→good R, loss in the bad state H)")
    p.add_argument("--loss-until", type=float, default=0.0, metavar="SECONDS",
                   help="stop the injected loss this long after the first datagram (0 = never)")
    p.add_argument("--cap-mbps", type=float, default=0.0, metavar="MBPS",
                   help="drop received datagrams beyond this rate (a token bucket; testing rate control)")
    p.add_argument("--cap-until", type=float, default=0.0, metavar="SECONDS",
                   help="lift the cap this long after the first datagram (0 = never)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=60)
    p.add_argument("--codec", choices=["h264", "hevc", "av1"], default="h264")
    p.add_argument("--bitrate", type=int, default=10_000, metavar="KBPS", help="bitrate in kbit/s (default 10000)")
    p.add_argument("--fec", type=int, default=None, metavar="PERCENT", help="FEC parity percent (default: the host's)")
    p.add_argument("--name", default="", help="name the host shows for this client (default: hostname)")
    p.add_argument("--config-dir", default=None,
                   help="where the client keeps its identity (default: punktfunk config dir)")
    p.add_argument("--details", action="store_true", help="with --json: add a 'details' object (rejections, rtt)")
    p.add_argument("--input-script", metavar="FILE",
                   help='send the input in FILE during the stream: JSON lines {"at": SECONDS, "event": [tag, ...]} '
                        "(docs/protocol-native.md, Input)")
    p.add_argument("--audio", type=int, choices=[0, 2, 6, 8], default=None, metavar="CHANNELS",
                   help="ask for audio in 2 (stereo), 6 (5.1) or 8 (7.1) channels; the summary counts its packets "
                        "(default: none, or stereo with --audio-out)")
    p.add_argument("--audio-out", metavar="FILE.wav", help="write the decoded audio to this WAV file")
    p.add_argument("--app", default="Desktop", metavar="NAME",
                   help="launch this app of the host's [[apps]] and stream it (default: Desktop); the stream ends "
                        "when the app exits, and the app when the stream ends")
    p.add_argument("--list-apps", action="store_true", help="print the host's apps and exit")
    p.add_argument("--ask-bitrate", action="append", default=[], metavar="KBPS@SECONDS",
                   help="ask the host for this bitrate so many seconds into the stream (repeatable); with "
                        "adaptive rate control it is also the most the host probes up to")
    p.add_argument("--click-to-photon", action="store_true",
                   help="measure click-to-photon with pointer moves (needs a capture that shows the pointer, "
                        "e.g. x11); the summary gains click_to_photon_p50_ms/p99_ms")


def options_from_args(args: argparse.Namespace) -> ClientOptions:
    host, port = args.host, args.port
    if port is None and host.count(":") == 1:
        host, _, p = host.partition(":")
        port = int(p)
    if host.startswith("[") and "]" in host:
        host, _, rest = host[1:].partition("]")
        if rest.startswith(":") and port is None:
            port = int(rest[1:])
    if not 0.0 <= args.loss < 1.0:
        raise ClientError("--loss must be in 0..1 (e.g. 0.05)")
    pattern = None
    if args.loss_pattern:
        try:
            pattern = LossPattern.parse(args.loss_pattern)
        except ValueError as exc:
            raise ClientError(f"--loss-pattern: {exc}") from None
    if args.cap_mbps < 0 or args.loss_until < 0 or args.cap_until < 0:
        raise ClientError("--cap-mbps, --loss-until and --cap-until must not be negative")
    if args.pin is not None and not (args.pin.isdigit() and 4 <= len(args.pin) <= 8):
        raise ClientError("--pin must be 4 to 8 digits")
    asks = [_bitrate_ask(a) for a in getattr(args, "ask_bitrate", None) or []]
    script = None
    if getattr(args, "input_script", None):
        try:
            script = load_input_script(args.input_script)
        except InputScriptError as exc:
            raise ClientError(str(exc)) from None
    return ClientOptions(
        host=host, port=port or DEFAULT_PORT, pin=args.pin, seconds=args.seconds, width=args.width,
        height=args.height, fps=args.fps, codec=args.codec, bitrate_kbps=args.bitrate, fec_percent=args.fec,
        loss=args.loss, loss_seed=args.loss_seed, loss_pattern=pattern, loss_until_s=args.loss_until,
        cap_mbps=args.cap_mbps, cap_until_s=args.cap_until, save_frames=args.save_frames, json=args.json,
        name=args.name, config_dir=Path(args.config_dir) if args.config_dir else None,
        input_script=script, click_to_photon=bool(getattr(args, "click_to_photon", False)),
        audio_channels=(args.audio if args.audio is not None else 2 if args.audio_out else 0),
        audio_out=args.audio_out, app=args.app, bitrate_asks=asks,
    )


def _bitrate_ask(text: str) -> tuple[float, int]:
    """``KBPS@SECONDS`` (``2000@5``: 2000 kbit/s five seconds in; ``KBPS`` alone: at the start)."""
    kbps, _, at = text.partition("@")
    try:
        ask = (float(at) if at else 0.0, int(kbps))
    except ValueError:
        raise ClientError(f"--ask-bitrate {text!r}: expected KBPS@SECONDS, e.g. 2000@5") from None
    if not math.isfinite(ask[0]) or ask[0] < 0 or ask[1] <= 0:
        raise ClientError(f"--ask-bitrate {text!r}: the rate must be positive, the time not negative")
    return ask


def main_from_args(args: argparse.Namespace) -> int:
    client: NativeClient | None = None
    try:
        opts = options_from_args(args)
        client = NativeClient(opts)
        if getattr(args, "list_apps", False):
            listed = client.list_apps()
            if opts.json:
                print(json.dumps(listed))
            else:
                running = (listed["running"] or {}).get("name")
                for app in listed["apps"]:
                    print(f"{app.get('id', '?'):>10}  {app['name']}{'  (running)' if app['name'] == running else ''}")
            return EXIT_OK
        try:
            summary = client.run()
        except KeyboardInterrupt:  # before the stream started (while pairing or connecting)
            summary = client.summary()
    except PairingFailed as exc:
        _fail(client, f"pairing failed: {exc}")
        return exc.exit_code
    except ClientError as exc:
        _fail(client, str(exc))
        return exc.exit_code
    if opts.json:
        out = dict(summary)
        if getattr(args, "details", False):
            out["details"] = client.details()
        print(json.dumps(out))
    elif client.session_id is not None:
        print(summary_text(summary, client.session_id, client.host_bye, client.rtt_us))
    return EXIT_OK


def _fail(client: NativeClient | None, message: str) -> None:
    if client is not None:
        client.terminal.end_status_line()
    print(f"punktfunk client: {message}", file=sys.stderr)
