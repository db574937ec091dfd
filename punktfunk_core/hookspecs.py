"""The whole public plugin surface of punktfunk.

Every hook here is called by the core; plugins implement the ones they need
with ``@punktfunk_core.hookimpl``. Hooks that add things receive a
``register`` callback (or a registry) instead of returning lists, so that a
bad registration fails at the point where it is made, naming the plugin.

No hook is ever called per frame. Stage objects are resolved once when a
session starts and the pipeline runner calls them directly; the only hook on
the streaming threads is :func:`stats_window`, once per aggregation window.

Each plugin's implementation is called on its own through
:meth:`punktfunk_core.plugins.PluginManager.call_each`: an exception is
logged naming the plugin and the others still run, except in the hooks that
fill the host's registries, where it stops the start.

``docs/plugins.md`` documents each hook with its exact signature; a test fails
when the two disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    import argparse

    from punktfunk_core.companion import Companion
    from punktfunk_core.doctor import Finding, Port
    from punktfunk_core.host import Host
    from punktfunk_core.registry import ProtocolRegistry, StageRegistry
    from punktfunk_core.session import Session
    from punktfunk_core.stats import StatsSample

PROJECT = "punktfunk"
hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def register_stages(registry: StageRegistry) -> None:
    """Add stage factories to the registry.

    Called once per process, right after plugins are loaded (in the host, in
    the CLI and in the console). Call ``registry.add(kind, name, factory,
    options_schema=...)`` for each stage the plugin provides (the JSON Schema of
    its options, e.g. ``MyOptions.schema()`` of a
    :class:`punktfunk_core.settings.Settings` class); ``kind`` is one of ``"capture"``,
    ``"encoder"``, ``"packetizer"``, ``"sender"``, ``"audio_source"``,
    ``"audio_encoder"``, ``"input"`` (docs/input.md). A (kind, name) pair
    that another plugin already registered raises :class:`punktfunk_core.registry.DuplicateStageError`
    naming both plugins. The factory is called with ``(spec, options)`` when a
    session starts (see ``docs/plugins.md``). Returns nothing.
    """


@hookspec
def register_protocols(registry: ProtocolRegistry) -> None:
    """Add protocol planes (a control plane plus the way it builds sessions).

    Called once in the host process after :func:`register_stages`. Call
    ``registry.add(name, factory)`` where ``factory(host)`` returns a
    :class:`punktfunk_core.protocol.ProtocolPlane`. The host starts the planes
    whose config section says ``enabled``. Returns nothing.
    """


@hookspec
def config_schema(register: Callable[[str, dict[str, Any]], None]) -> None:
    """Contribute the JSON Schema of the plugin's config section.

    Called once whenever the config is loaded or the schema printed. Call
    ``register(section, schema)`` with the top-level TOML table name and a
    JSON-Schema object (``"type": "object"``, every property with a
    ``"default"``), e.g. ``MySettings.schema()`` of a
    :class:`punktfunk_core.settings.Settings` class. Unknown keys in the section are reported as errors when the
    schema says ``"additionalProperties": false``. Returns nothing.
    """


@hookspec
def cli_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add sub-commands to the ``punktfunk`` command line.

    Called once when the CLI starts, with the ``add_parser`` factory of the
    top-level parser. Each parser must ``set_defaults(func=callable)``; the
    callable receives the parsed ``argparse.Namespace`` and returns the exit
    code. ``subparsers.choices["serve"]`` is the ``serve`` parser: a shorthand
    for ``--enable SECTION`` is an option with ``dest="enable",
    action="append_const", const=SECTION``. Returns nothing.
    """


@hookspec
def serve_companions(register: Callable[[str, Companion], None]) -> None:
    """Add companions: programs ``punktfunk serve`` runs beside the host and stops with it.

    Called once when the CLI starts (before its options are parsed). Call
    ``register(name, companion)`` with a
    :class:`punktfunk_core.companion.Companion`; ``name`` is its config
    section, whose ``enabled`` says whether ``serve`` starts it. The web
    console is one (the ``console`` plugin). Returns nothing.
    """


@hookspec
def doctor_findings(config: dict[str, Any], register: Callable[[Finding], None]) -> None:
    """Say what this machine lets the plugin do, for ``punktfunk doctor``.

    Called once per ``punktfunk doctor`` run (not in the host), with the loaded
    config. Call ``register(finding)`` with a
    :class:`punktfunk_core.doctor.Finding` (``check``, ``status`` one of
    ``"ok"``, ``"warn"``, ``"fail"``, ``"info"``, ``message``, ``fix``: what to
    do), reusing the probes the plugin's stages use, each talking to another
    process under :func:`punktfunk_core.doctor.bounded`. A finding whose
    ``blocks`` names a protocol stops that protocol from counting as one that
    can serve; a finding named after a protocol replaces the core's "protocol
    is off" line. Returns nothing.
    """


@hookspec
def listening_ports(config: dict[str, Any], register: Callable[[Port], None]) -> None:
    """Name the ports the plugin's config section makes the host (or its companion) listen on.

    Called once per ``punktfunk doctor`` run. Call ``register(port)`` with a
    :class:`punktfunk_core.doctor.Port` for each socket the enabled section
    opens (``port = 0``: a free one chosen at start, with ``chosen`` saying what
    a firewall rule needs instead). Doctor checks that each can be bound (a busy
    one blocks its ``section``) and lists those ``clients`` reach in its
    firewall hint. Returns nothing.
    """


@hookspec
def host_started(host: Host) -> None:
    """The host process is up: config loaded, IPC serving, planes started.

    Called once in the host process. ``host`` gives access to ``config``,
    ``paths``, ``gate`` (the measurement gate), ``sessions`` and ``pm``.
    Returns nothing.
    """


@hookspec
def host_stopping(host: Host) -> None:
    """The host is shutting down (Ctrl-C, SIGTERM or ``host.stop()``).

    Called once, after the sessions have ended (their last stats windows are
    in; the host waits at most 3 s for them) and before the protocol planes and
    IPC close. Save state that must survive here; keep it short. Returns
    nothing.
    """


@hookspec
def config_changed(host: Host, old: dict[str, Any], new: dict[str, Any],
                   changes: dict[str, list[str]]) -> list[str] | None:
    """A reload (SIGHUP, ``punktfunk config reload``, the console) changed settings.

    Called on the thread that reloads (never a streaming thread), after the host
    took the new config (``host.config is new``). ``changes`` maps each section to
    its changed keys (``config.changes(old, new)``), only those whose setting is
    declared ``live`` (``setting(..., live=LIVE_NOW)`` or ``LIVE_NEW_SESSIONS``);
    the others keep their old values in ``new`` and are reported as needing a
    restart. Apply what your plugin holds outside ``host.config`` (a recorder's
    limit, a running session's bitrate). Returns the ``"section.key"`` names it
    could not apply live (reported as needing a restart), or None.
    """


@hookspec
def ipc_commands(host: Host, register: Callable[..., None]) -> None:
    """Add commands to the host's IPC channel.

    Called once in the host process. Call ``register(name, handler)``; names
    are dotted (``"stats.start"``). ``handler(args: dict)`` runs on the IPC
    thread, must return a JSON-serialisable value and may raise
    :class:`punktfunk_core.ipc.IpcError` (``code`` is an HTTP-like status, the
    message is shown to the user). Any other exception is logged and answered
    with code 500. A duplicate name raises an error naming both plugins.
    Returns nothing.
    """


@hookspec
def console_routes(register: Any, ipc: Any) -> None:
    """Add routes, blueprints and pages to the web console.

    Called once in each console worker when its Flask app is created. Call
    ``register(rule, view, methods=..., lane=...)``; ``lane`` is ``"admin"``
    (admin or plugin token), ``"device"`` (read-only lane for paired devices,
    an explicit allow-list) or ``"public"``. ``register.blueprint(bp,
    lanes={endpoint: lane})`` adds a Flask blueprint with its static files
    (public, ``/plugins/<plugin>/static/``) and templates;
    ``register.page(name, title, script, bp)`` a console page,
    ``register.script(page, script, bp)`` a script a page loads (docs/plugins.md).
    ``ipc`` is an :class:`punktfunk_core.ipc.IpcClient` connected to the host;
    views never hold host state. Returns nothing.
    """


@hookspec
def session_started(session: Session) -> None:
    """A session's pipeline has been built and is about to run its first frame.

    Called once per session on the thread that started it. ``session`` carries
    ``id``, ``kind`` (protocol), ``client``, ``spec`` (width, height, fps,
    codec, bitrate), ``encoder_backend`` and ``gpu``. Returns nothing.
    """


@hookspec
def session_ended(session: Session, error: BaseException | None) -> None:
    """A session has stopped and released its stages.

    Called once per session. ``error`` is the exception that ended it, or None
    for a clean stop. It runs on the last of the session's pipeline threads to
    finish (its send thread, or its encode thread when the sender never waits),
    after every stage is closed and the session's last stats window is
    emitted, and after the ``on_end`` callback its plane passed to
    ``Host.start_session``. Keep it short: the host's ``stop()`` waits for
    sessions to end. Returns nothing.
    """


@hookspec
def stats_window(session: Session, sample: StatsSample) -> None:
    """One aggregation window of a measured session has closed.

    Called by the pipeline runner once per window (2 s for punktfunk/1, 1 s
    for GameStream, as the protocol says) while measurement is on, on the
    session's send thread, with a complete
    :class:`punktfunk_core.stats.StatsSample` (``t_ms`` and ``session_id`` are
    0: consumers stamp their own). Must return quickly and must not keep a
    reference to mutate the sample. Exceptions are logged and never stop the
    stream. Returns nothing.
    """
