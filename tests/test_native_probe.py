"""A tiny test-only plugin, loaded into a real host with
``PUNKTFUNK_PLUGINS=test_native_probe`` (``tests/`` on PYTHONPATH).

It arms the host's measurement gate when the host starts and appends every
``stats_window`` sample (through the real hook) as one JSON line to the file
named by ``PF_NATIVE_PROBE_OUT``. It holds no tests itself.
"""

from __future__ import annotations

import json
import os
from typing import Any

from punktfunk_core import hookimpl


@hookimpl
def host_started(host: Any) -> None:
    if os.environ.get("PF_NATIVE_PROBE_OUT"):
        host.gate.arm("test-native-probe")


@hookimpl
def stats_window(session: Any, sample: Any) -> None:
    out = os.environ.get("PF_NATIVE_PROBE_OUT")
    if not out:
        return
    line = json.dumps({"session_id": session.id, "kind": session.kind, "sample": sample.to_dict(),
                       "window_s": getattr(sample, "window_s", None)})
    with open(out, "a") as f:
        f.write(line + "\n")
