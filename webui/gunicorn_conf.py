"""gunicorn settings for the console (``-c python:punktfunk_webui.gunicorn_conf``).

When the console runs as a child of ``punktfunk serve``, the master watches
its parent: if the host dies without stopping it (SIGKILL, crash), the console
shuts itself down instead of holding the port with nobody to talk to.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

PARENT_ENV = "PUNKTFUNK_CONSOLE_PARENT"

worker_class = "gthread"
threads = 4
graceful_timeout = 1  # the host's stop() waits 2 s before killing
keepalive = 2
timeout = 30
accesslog = None
loglevel = "warning"
proc_name = "punktfunk-console"
# gunicorn >= 25.1 opens a control socket in $XDG_RUNTIME_DIR (outside our private
# runtime dir, shared by every gunicorn of the user); the console needs none
control_socket_disable = True


def when_ready(server: Any) -> None:
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return

    def watch() -> None:
        while True:
            if os.getppid() != int(parent):
                server.log.warning("punktfunk host %s is gone; stopping the console", parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            threading.Event().wait(1.0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
