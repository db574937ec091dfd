"""Test-only plugin whose session and stats hooks raise (a faulty third-party
plugin). Loaded beside ``pf_testplugins`` with
``PUNKTFUNK_PLUGINS=pf_testplugins,pf_testplugins_faulty``."""

from __future__ import annotations

from punktfunk_core import hookimpl


@hookimpl
def session_started(session):
    raise RuntimeError("faulty plugin: session_started fails on purpose")


@hookimpl
def stats_window(session, sample):
    raise RuntimeError("faulty plugin: stats_window fails on purpose")


@hookimpl
def session_ended(session, error):
    raise RuntimeError("faulty plugin: session_ended fails on purpose")
