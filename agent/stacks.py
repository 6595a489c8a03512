"""Python stacks as the wire carries them: innermost first, at most ``wire.MAX_STACK`` entries
``path/file.py:LINE in function``, each at most ``wire.MAX_STACK_ENTRY`` characters.

Read from frame objects only: no source lines (no file reads), no signals, no device sync.
"""

from __future__ import annotations

import sys
from types import FrameType, TracebackType

from gradwatch import wire


def _entry(frame: FrameType, line: int | None) -> str:
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)  # 3.11+: Class.method
    text = f"{code.co_filename}:{line if line is not None else 0} in {name}"
    if len(text) > wire.MAX_STACK_ENTRY:  # keep the end: file name, line and function
        text = "..." + text[len(text) - wire.MAX_STACK_ENTRY + 3 :]
    return text


def of_frame(frame: FrameType | None) -> tuple[str, ...]:
    """``frame`` and its callers, innermost first."""
    out: list[str] = []
    while frame is not None and len(out) < wire.MAX_STACK:
        out.append(_entry(frame, frame.f_lineno))
        frame = frame.f_back
    return tuple(out)


def of_thread(ident: int | None) -> tuple[str, ...]:
    """The current stack of thread ``ident`` (empty when it no longer runs)."""
    if ident is None:
        return ()
    return of_frame(sys._current_frames().get(ident))


def of_traceback(tb: TracebackType | None) -> tuple[str, ...]:
    """The innermost frames of a traceback (where the exception was raised first)."""
    frames: list[tuple[FrameType, int]] = []
    while tb is not None:
        frames.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return tuple(_entry(f, line) for f, line in reversed(frames[-wire.MAX_STACK :]))
