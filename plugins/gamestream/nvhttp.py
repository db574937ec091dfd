"""nvhttp: the GameStream HTTP (pairing, server info) and HTTPS (apps, launch) API.

HTTPS requires a client certificate: the handshake (punktfunk_core.tls) accepts
any, and each request is served only when that certificate's SHA-256
fingerprint is on the paired list (Moonlight certificates all share one subject,
so they cannot be told apart any other way). An unpaired certificate gets 401 on
every command, as from Sunshine; Moonlight then asks serverinfo over plain HTTP
and sees it is not paired. No certificate fails the handshake. Every request is
parsed strictly; bad input is counted and answered with an error, never raised.

Each listener admits connections through a ``ConnectionGate``: until its
request has arrived a connection is pending (few per source address, closed
at ``request_timeout_s``); the answer must go out within that time again,
except while a pairing request waits for the operator's PIN.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from punktfunk_core.admission import ConnectionGate
from punktfunk_core.identity import PairedClient
from punktfunk_core.tls import HandshakeFailed, TlsConnection, TlsServer

from punktfunk_gamestream import wire, wire_nvhttp
from punktfunk_gamestream.pairing import PairingError, PairingRefused
from punktfunk_gamestream.wire import BadInput
from punktfunk_gamestream.wire_nvhttp import xml_response

if TYPE_CHECKING:
    from punktfunk_gamestream.plane import GameStreamPlane

log = logging.getLogger("punktfunk.gamestream.nvhttp")

#: the status a launch that could not start the app answers (Moonlight shows it with the message)
LAUNCH_FAILED_STATUS = 503
REQUEST_TIMEOUT_S = 100.0  # the first pairing request waits for the operator's PIN
HANDSHAKE_TIMEOUT_S = 10.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a pairing request may wait a minute for its PIN
    allow_reuse_address = True
    request_queue_size = 32

    #: connections per listener still sending their request / being answered
    max_pending = 32
    max_answering = 32

    def __init__(self, addr: tuple[str, int], handler: type, plane: GameStreamPlane, tls: bool) -> None:
        self.plane = plane
        self.tls: TlsServer | None = None
        if tls:  # fails early on a broken host certificate
            ident = plane.identity
            self.tls = TlsServer(ident.cert_path, ident.key_path, min_version="1.2", require_client_cert=True,
                                 session_id=b"punktfunk-gamestream")
        super().__init__(addr, handler)
        self.request_timeout_s = float(plane.config.get("request_timeout_s", 5.0))
        self.gate = ConnectionGate("https" if tls else "http", max_pending=self.max_pending,
                                   max_pending_per_source=int(plane.config.get("connections_per_source", 8)),
                                   pending_timeout_s=self.request_timeout_s, max_established=self.max_answering,
                                   count=plane.count)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.gate.admit(request, client_address):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.gate.release(client_address)
            raise

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            self._finish(request, client_address)
        finally:
            self.gate.release(client_address)

    def _finish(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            try:
                request = self.tls.accept(request, HANDSHAKE_TIMEOUT_S)
            except HandshakeFailed as exc:
                self.plane.count("tls_rejected")
                log.info("HTTPS from %s refused: %s", client_address[0], exc)
                try:
                    request.close()
                except OSError:
                    pass
                return
        request.settimeout(REQUEST_TIMEOUT_S)
        try:
            super().finish_request(request, client_address)
        finally:
            try:
                request.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.plane.count("http_errors")
        log.debug("nvhttp request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "punktfunk-gamestream"
    sys_version = ""

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], fmt % args)

    def parse_request(self) -> bool:
        """The request line and headers are in: the connection is no longer idle."""
        if not super().parse_request():
            return False
        if not self.server.gate.establish(self.client_address, self.server.request_timeout_s):
            self.server.plane.count(f"{self.server.gate.name}_refused_busy")
            self.close_connection = True
            return False
        return True

    # -- plumbing ---------------------------------------------------------------
    def _send(self, body: bytes, status: int = 200, ctype: str = "application/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _xml(self, fields: dict[str, Any] | list[tuple[str, Any]], status: int = 200, message: str = "OK",
             inner: str = "") -> None:
        self._send(xml_response(fields, status, message, inner))

    def _error(self, status: int, message: str) -> None:
        self._xml({}, status, message)

    def _paired_client(self) -> PairedClient | None:
        """The paired client whose certificate this HTTPS connection presented (looked up per
        request, so an unpairing counts at once)."""
        if not isinstance(self.connection, TlsConnection):
            return None
        return self.server.plane.identity.paired.for_cert_der(self.connection.peer_cert_der)

    def do_POST(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        plane = self.server.plane
        try:
            parts = urlsplit(self.path)
            args = wire_nvhttp.parse_query(parts.query)
            route = parts.path.rstrip("/") or "/"
        except BadInput as exc:
            plane.count("http_bad")
            return self._error(400, str(exc))
        client = self._paired_client()
        if self.server.tls is not None and client is None:
            plane.count("tls_unpaired")
            log.info("HTTPS %.60r from %s refused: its certificate is not paired", route, self.client_address[0])
            return self._error(401, "the client is not paired")
        try:
            handler = ROUTES.get(route)
            if handler is None:
                return self._error(404, f"no such command {route}")
            handler(self, plane, args, client)
        except BadInput as exc:
            plane.count("http_bad")
            self._error(400, str(exc))

    # -- commands ------------------------------------------------------------------
    def serverinfo(self, plane: GameStreamPlane, args: dict[str, str], client: PairedClient | None) -> None:
        local_ip = self.connection.getsockname()[0]
        launch = plane.launch
        busy = launch is not None
        codecs = plane.codec_support()
        fields = [
            ("hostname", plane.host.hostname),
            ("appversion", wire_nvhttp.APP_VERSION),
            ("GfeVersion", wire_nvhttp.GFE_VERSION),
            ("uniqueid", plane.identity.unique_id),
            ("HttpsPort", plane.ports["https"]),
            ("ExternalPort", plane.ports["http"]),
            ("MaxLumaPixelsHEVC", 1869449984 if codecs & wire.SCM_HEVC else 0),
            ("mac", "00:00:00:00:00:00"),
            ("LocalIP", local_ip),
            ("ServerCodecModeSupport", codecs),
            ("PairStatus", 1 if client is not None else 0),
            ("currentgame", launch.app_id if launch is not None else 0),
            ("state", "SUNSHINE_SERVER_BUSY" if busy else "SUNSHINE_SERVER_FREE"),
        ]
        self._xml(fields)

    def pair(self, plane: GameStreamPlane, args: dict[str, str], client: PairedClient | None) -> None:
        uid = args.get("uniqueid", "")[:64]
        ip = self.client_address[0]
        pairing = plane.pairing
        phrase = args.get("phrase")
        try:
            if phrase == "getservercert":
                gate = self.server.gate
                gate.set_deadline(self.client_address, None)  # waiting for the operator's PIN is not idling
                try:
                    pem = pairing.get_server_cert(uid, ip, args.get("devicename", ""), args.get("salt"),
                                                  args.get("clientcert"))
                finally:
                    gate.set_deadline(self.client_address, self.server.request_timeout_s)
                return self._xml([("paired", 1), ("plaincert", pem.hex())])
            if "clientchallenge" in args:
                resp = pairing.client_challenge(uid, ip, args["clientchallenge"])
                return self._xml([("paired", 1), ("challengeresponse", resp.hex())])
            if "serverchallengeresp" in args:
                secret = pairing.server_challenge_resp(uid, ip, args["serverchallengeresp"])
                return self._xml([("paired", 1), ("pairingsecret", secret.hex())])
            if "clientpairingsecret" in args:
                pairing.client_pairing_secret(uid, ip, args["clientpairingsecret"])
                return self._xml([("paired", 1)])
            if phrase == "pairchallenge":
                if client is None:
                    return self._xml([("paired", 0)])
                return self._xml([("paired", 1)])
        except PairingRefused:
            plane.count("pairing_refused")
            return self._xml([("paired", 0)])
        except PairingError:
            return self._xml([("paired", 0)])
        plane.count("http_bad")
        self._error(400, "unknown pairing step")

    def unpair(self, plane: GameStreamPlane, args: dict[str, str], client: PairedClient | None) -> None:
        if client is not None:
            plane.identity.paired.remove(client.fingerprint)
            log.warning("GameStream client %r unpaired itself", client.name)
        else:
            try:
                plane.pairing.client_gave_up(args.get("uniqueid", "")[:64], self.client_address[0])
            except PairingRefused:
                plane.count("pairing_refused")
        self._xml({})

    def applist(self, plane: GameStreamPlane, args: dict[str, str], client: PairedClient | None) -> None:
        # the host's [[apps]] (Desktop first), with their stable ids (docs/apps.md)
        apps = "".join(f"<App><IsHdrSupported>0</IsHdrSupported><AppTitle>{wire_nvhttp.xml_escape(app.name)}"
                       f"</AppTitle><ID>{app.id}</ID></App>" for app in plane.host.apps.apps)
        self._xml({}, inner=apps)

    def launch(self, plane: GameStreamPlane, args: dict[str, str], client: PairedClient | None) -> None:
        assert client is not None
        appid = wire.parse_int(args.get("appid"), name="appid", lo=0, hi=0x7FFFFFFF)
        try:
            plane.host.apps.find(appid)
        except LookupError:
            return self._error(404, f"no app with id {appid}")
        mode = wire_nvhttp.parse_mode(args.get("mode"))
        rikey = wire.parse_hex(args.get("rikey"), name="rikey", exact=16)
        rikeyid = wire.parse_int(args.get("rikeyid"), name="rikeyid")
        # the prep steps may take a while (STEP_TIMEOUT_S each): not an idle connection
        gate = self.server.gate
        gate.set_deadline(self.client_address, None)
        try:
            ok, why = plane.start_launch(client, self.client_address[0], mode, rikey, rikeyid, resume=False,
                                         appid=appid)
        finally:
            gate.set_deadline(self.client_address, self.server.request_timeout_s)
        if not ok:
            return self._xml([("gamesession", 0)], LAUNCH_FAILED_STATUS, why)
        self._xml([("sessionUrl0", self._session_url(plane)), ("gamesession", 1)])

    def resume(self, plane: GameStreamPlane, args: dict[str, str], client: PairedClient | None) -> None:
        assert client is not None
        rikey = wire.parse_hex(args.get("rikey"), name="rikey", exact=16)
        rikeyid = wire.parse_int(args.get("rikeyid"), name="rikeyid")
        ok, why = plane.start_launch(client, self.client_address[0], None, rikey, rikeyid, resume=True)
        if not ok:
            return self._error(503, why)
        self._xml([("sessionUrl0", self._session_url(plane)), ("resume", 1)])

    def cancel(self, plane: GameStreamPlane, args: dict[str, str], client: PairedClient | None) -> None:
        assert client is not None
        # like GFE: 200 either way, "cancel" says whether it happened (Moonlight then tells its user that
        # another device launched the app). Ending the app waits for its group and undo steps.
        gate = self.server.gate
        gate.set_deadline(self.client_address, None)
        try:
            cancelled = plane.cancel_launch_of(client)
        finally:
            gate.set_deadline(self.client_address, self.server.request_timeout_s)
        self._xml([("cancel", 1 if cancelled else 0)])

    def _session_url(self, plane: GameStreamPlane) -> str:
        ip = self.connection.getsockname()[0]
        if ":" in ip:
            ip = f"[{ip}]"
        return f"rtsp://{ip}:{plane.ports['rtsp']}"


ROUTES = {
    "/serverinfo": _Handler.serverinfo,
    "/pair": _Handler.pair,
    "/unpair": _Handler.unpair,
    "/applist": _Handler.applist,
    "/launch": _Handler.launch,
    "/resume": _Handler.resume,
    "/cancel": _Handler.cancel,
}
HTTP_ONLY_OK = {"/serverinfo", "/pair", "/unpair"}


class _HttpHandler(_Handler):
    def do_GET(self) -> None:  # noqa: N802
        route = urlsplit(self.path).path.rstrip("/")
        if route not in HTTP_ONLY_OK:
            self.server.plane.count("http_unauthorized")
            return self._error(401, "this command needs HTTPS with a paired client certificate")
        super().do_GET()


class NvHttp:
    """The HTTP and HTTPS listeners."""

    def __init__(self, plane: GameStreamPlane, bind: str, http_port: int, https_port: int) -> None:
        self.http = _Server((bind, http_port), _HttpHandler, plane, tls=False)
        try:  # the TLS server loads the host certificate here: a broken one fails early
            self.https = _Server((bind, https_port), _Handler, plane, tls=True)
        except Exception:
            self.http.gate.close()
            self.http.server_close()
            raise
        self._threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                                          name=f"gamestream-{n}", daemon=True)
                         for n, s in (("http", self.http), ("https", self.https))]

    @property
    def ports(self) -> tuple[int, int]:
        return self.http.server_address[1], self.https.server_address[1]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        for s in (self.http, self.https):
            s.shutdown()
            s.gate.close()
            s.server_close()

