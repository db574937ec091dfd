"""How the host's log lines look on stderr: for a terminal, or for systemd's journal.

Neither form has colour codes. When stderr is the journal (systemd sets
``$JOURNAL_STREAM`` to the device and inode of the stream it connected; the
variable alone can be inherited, so both must match stderr), each event is one
line with a syslog priority prefix (``<3>punktfunk.host: …``, which journald
turns into the entry's priority) and no time stamp (the journal has its own);
a traceback is folded onto the same line, so one event stays one journal
entry. Elsewhere the format is the terminal one, with the time.
"""

from __future__ import annotations

import logging
import os
import sys

TERMINAL_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: logging level -> syslog priority (sd-daemon(3) prefixes)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def stderr_is_journal() -> bool:
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return bool(ino) and st.st_dev == int(dev) and st.st_ino == int(ino)
    except (ValueError, OSError, AttributeError):
        return False


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message`` on one line, a traceback folded in with `` | ``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = next((p for level, p in sorted(_PRIORITY.items(), reverse=True) if record.levelno >= level), 7)
        return f"<{prio}>" + " | ".join(line for line in text.splitlines() if line.strip())


def stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(TERMINAL_FORMAT, datefmt="%H:%M:%S"))
    return handler
