"""The collector's log lines: one line per event, whatever the names in it hold.

Run, parameter and host names come from the network. A run named ``"x\\n2024-01-01 CRITICAL
..."`` must not write a fake line into the log, so :class:`EscapingFormatter` escapes control
characters (and Unicode line separators) in every message, as ``\\n``, ``\\x1b``, ``\\u2028``.
Tracebacks, which the formatter appends after the message, keep their lines.
"""

from __future__ import annotations

import logging
import re
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape(text: str) -> str:
    """``text`` with control characters written as Python escapes."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class EscapingFormatter(logging.Formatter):
    """A formatter whose messages cannot contain a line break or a terminal escape."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape(record.message)
        return super().formatMessage(record)


def configure(level: str) -> None:
    """Log to stderr at ``level`` through the escaping formatter (entry points only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
