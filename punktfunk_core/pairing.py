"""The core's pairing commands: one IPC for every protocol's pairing contract.

``pairing.protocols``   every registered protocol: running, how it takes a PIN, its
                        pairing state, how many clients it has paired
``pairing.pin``         {protocol, pin, seconds?}: the operator's PIN, which opens a
                        window or answers the waiting client, as the protocol pairs
``pairing.clients``     {protocol}: its paired clients
``pairing.unpair``      {protocol, fingerprint | all}: forget one client (8+ hex
                        digits of its fingerprint) or all of them
``pairing.permissions`` {protocol, fingerprint, view_only}: what a client may do

The console's pairing bridge (``/api/v1/pairing/...``) and ``punktfunk
pairing`` / ``punktfunk <protocol> pin`` call these; the planes implement
:class:`punktfunk_core.protocol.ProtocolPlane`'s pairing methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from punktfunk_core.ipc import IpcError
from punktfunk_core.protocol import PIN_FROM_CLIENT, PIN_FROM_HOST, ProtocolPlane

if TYPE_CHECKING:
    from punktfunk_core.host import Host

#: how long a PIN window stays open when the operator gives no time
DEFAULT_WINDOW_S = 120.0


def pairing_commands(host: Host) -> dict[str, Callable[[dict[str, Any]], Any]]:
    def plane(args: dict[str, Any]) -> ProtocolPlane:
        name = args.get("protocol")
        if not isinstance(name, str) or name not in host.pm.protocols.names():
            raise IpcError(404, f"no protocol {name!r} on this host (protocols: "
                                f"{', '.join(host.pm.protocols.names()) or 'none'})")
        running = host.planes.get(name)
        if running is None:
            why = host.protocol_errors.get(name)
            raise IpcError(409, f"protocol {name!r} is not running on this host "
                                + (f"(it failed to start: {why})" if why else f"(set {name}.enabled = true)"))
        return running

    def protocols(_args: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for name in host.pm.protocols.names():
            p = host.planes.get(name)
            pin_from = p.pin_from if p is not None else getattr(host.pm.protocols.factory(name), "pin_from", None)
            out.append({"protocol": name, "running": p is not None, "pin_from": pin_from,
                        "pairing": p.pairing_status() if p is not None else {},
                        "paired": len(p.paired) if p is not None and p.paired is not None else None})
        return out

    def pin(args: dict[str, Any]) -> dict[str, Any]:
        p = plane(args)
        value = args.get("pin")
        text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if p.pin_from == PIN_FROM_HOST:
            return p.open_pairing(text, args.get("seconds", DEFAULT_WINDOW_S))
        if p.pin_from == PIN_FROM_CLIENT:
            return p.submit_pin(text)
        raise IpcError(501, f"protocol {p.name!r} does not pair clients")

    def clients(args: dict[str, Any]) -> list[dict[str, Any]]:
        return plane(args).paired_clients()

    def unpair(args: dict[str, Any]) -> dict[str, Any]:
        if args.get("all") is True:
            return plane(args).unpair(everyone=True)
        return plane(args).unpair(args.get("fingerprint"))

    def permissions(args: dict[str, Any]) -> dict[str, Any]:
        view_only = args.get("view_only")
        if not isinstance(view_only, bool):
            raise IpcError(400, "view_only must be true or false")
        return plane(args).set_permissions(args.get("fingerprint"), view_only=view_only)

    return {"pairing.protocols": protocols, "pairing.pin": pin, "pairing.clients": clients,
            "pairing.unpair": unpair, "pairing.permissions": permissions}
