"""WSGI entry point for gunicorn: ``punktfunk_webui.wsgi:app``.

Each gunicorn worker imports this module and builds its own app. The config
comes from ``PUNKTFUNK_CONSOLE_CONFIG`` (the validated config as JSON, set by
:func:`punktfunk_webui.server.start_console`) or, when absent, from the file
named by ``PUNKTFUNK_CONFIG_FILE`` (defaults when unset); the directories come
from ``PUNKTFUNK_CONFIG_DIR`` / ``PUNKTFUNK_RUNTIME_DIR`` as everywhere else.
"""

from __future__ import annotations

import json
import os
from typing import Any

from punktfunk_core.paths import Paths
from punktfunk_core.plugins import load_plugin_manager

from punktfunk_webui.app import create_app
from punktfunk_webui.server import CONFIG_ENV


def _config(pm: Any) -> dict[str, Any]:
    raw = os.environ.get(CONFIG_ENV)
    if raw:
        return json.loads(raw)
    from punktfunk_core import config as configmod

    return configmod.load(os.environ.get("PUNKTFUNK_CONFIG_FILE") or None, pm)


_pm = load_plugin_manager()
app = create_app(_config(_pm), Paths.from_env(), pm=_pm)
