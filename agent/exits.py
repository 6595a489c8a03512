"""How a run ends, for the ``bye``: exceptions described and classified, and process-wide hooks
that note uncaught exceptions and termination signals without replacing anyone's handlers.

The hooks chain: ``sys.excepthook`` and ``threading.excepthook`` note the exception, then call
the hook that was there before. SIGTERM/SIGINT get a wrapper only over a Python handler (noted,
then called: it may raise, as the trainer's does) or over the default disposition (the bye is
sent, then the signal is raised again with the default disposition, so the process dies as it
would have). Ignored signals and handlers installed from C are left alone; handlers can only
be installed from the main thread, so a monitor created elsewhere wraps none. Everything here
runs at the edge of a dying process: it never raises.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, NamedTuple, Protocol

import torch

from gradwatch import wire
from gradwatch.agent import stacks

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals whose handlers are wrapped."""
_DISTRIBUTED = re.compile(r"nccl|gloo|c10d|processgroup|tcpstore|collective operation", re.I)


class ExitInfo(NamedTuple):
    """What ended a run, as the ``bye`` carries it."""

    reason: str = "close"
    error_type: str = ""
    error_kind: str = ""
    error_message: str = ""
    stack: tuple[str, ...] = ()
    signal: int = 0


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts (a few levels, no cycles)."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < 8 and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def error_kind(exc: BaseException) -> str:
    """``oom``, ``distributed`` or ``exception`` (see ``wire.ERROR_KINDS``)."""
    dist_errors: tuple[type[BaseException], ...] = tuple(
        t for t in (getattr(torch.distributed, "DistError", None),) if isinstance(t, type)
    )
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
            isinstance(e, RuntimeError) and "out of memory" in str(e).lower()
        ):
            return "oom"
    for e in chain:
        if isinstance(e, dist_errors) or _DISTRIBUTED.search(f"{type(e).__name__} {e}"):
            return "distributed"
    return "exception"


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return name[: wire.MAX_ERROR_TYPE]


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not lose the report
        text = f"<unprintable {type(exc).__name__}>"
    limit = wire.MAX_ERROR_MESSAGE
    return text if len(text) <= limit else text[: limit - 3] + "..."


def of_exception(exc: BaseException) -> ExitInfo:
    """The exit an exception means: ``error`` with its details; KeyboardInterrupt is SIGINT's
    ``terminated``, ``SystemExit(0)`` a normal ``close``."""
    stack = stacks.of_traceback(exc.__traceback__)
    if isinstance(exc, KeyboardInterrupt):
        return ExitInfo("terminated", stack=stack, signal=int(signal.SIGINT))
    if isinstance(exc, SystemExit):
        if exc.code in (None, 0):
            return ExitInfo("close")
        return ExitInfo("error", "SystemExit", "exception", f"exit code {exc.code}"[:1024], stack)
    return ExitInfo("error", _type_name(exc), error_kind(exc), _message(exc), stack)


def resolve(noted: ExitInfo | None, reason: str | None, exc: BaseException | None) -> ExitInfo:
    """The exit a ``close(reason)`` reports: what a hook ``noted`` (a signal, an uncaught
    exception), else ``exc``, else the exception propagating while close() runs (from a
    ``finally`` or ``except`` block), else a normal close. An explicit ``reason`` that
    disagrees wins, without details."""
    info = noted
    if info is None:
        exc = exc if exc is not None else sys.exc_info()[1]
        info = of_exception(exc) if exc is not None else ExitInfo()
    return info if reason is None or reason == info.reason else ExitInfo(reason)


def of_signal(signum: int, frame: FrameType | None) -> ExitInfo:
    """``terminated`` by ``signum``, with where the main thread was when it arrived."""
    return ExitInfo("terminated", stack=stacks.of_frame(frame), signal=int(signum))


# ------------------------------------------------------------------------ process-wide hooks


class Watcher(Protocol):
    """What the hooks need from a monitor."""

    def note_exit(self, info: ExitInfo, thread: int | None) -> None: ...
    def close(self, reason: str | None = None) -> None: ...


Handler = Callable[[int, FrameType | None], Any] | int | None
_live: list[Watcher] = []
_lock = threading.RLock()  # a signal handler may run while its own thread holds it
_prev_excepthook: Callable[..., Any] | None = None
_prev_thread_hook: Callable[..., Any] | None = None
_prev_handlers: dict[int, Handler] = {}
_pid = os.getpid()


def attach(watcher: Watcher, *, signals: bool) -> None:
    """Start noting exits for ``watcher``; install the hooks when it is the first."""
    global _prev_excepthook, _prev_thread_hook, _pid
    with _lock:
        if os.getpid() != _pid:  # a forked child watching a model of its own
            _pid = os.getpid()
            _live.clear()
        _live.append(watcher)
        if sys.excepthook is not _excepthook:
            _prev_excepthook, sys.excepthook = sys.excepthook, _excepthook
        if threading.excepthook is not _thread_excepthook:
            _prev_thread_hook, threading.excepthook = threading.excepthook, _thread_excepthook
    if signals and threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if current is _on_signal or current is signal.SIG_IGN or current is None:
                continue
            _prev_handlers[signum] = current
            signal.signal(signum, _on_signal)


def detach(watcher: Watcher) -> None:
    """Stop noting exits for ``watcher``; the last one out restores what it wrapped."""
    global _prev_excepthook, _prev_thread_hook
    with _lock:
        if watcher in _live:
            _live.remove(watcher)
        if _live:
            return
        if sys.excepthook is _excepthook and _prev_excepthook is not None:
            sys.excepthook, _prev_excepthook = _prev_excepthook, None
        if threading.excepthook is _thread_excepthook and _prev_thread_hook is not None:
            threading.excepthook, _prev_thread_hook = _prev_thread_hook, None
    if threading.current_thread() is threading.main_thread():
        for signum, previous in list(_prev_handlers.items()):
            if signal.getsignal(signum) is _on_signal:
                signal.signal(signum, previous)
            del _prev_handlers[signum]


def _mine() -> list[Watcher]:
    """The live watchers, unless this is a forked child (a DataLoader worker inherits the
    hooks but not the monitors' threads: its exits are not the run's)."""
    return list(_live) if os.getpid() == _pid else []


def _note(info: ExitInfo, thread: int | None) -> None:
    for watcher in _mine():
        try:
            watcher.note_exit(info, thread)
        except Exception:  # pragma: no cover - a dying process must still run the next hook
            log.debug("gradwatch could not note an exit", exc_info=True)


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    try:
        _note(of_exception(exc), None)
    finally:
        previous = _prev_excepthook or sys.__excepthook__
        previous(exc_type, exc, tb)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    try:
        if args.exc_value is not None:
            ident = args.thread.ident if args.thread is not None else None
            _note(of_exception(args.exc_value), ident)
    finally:
        previous = _prev_thread_hook or threading.__excepthook__
        previous(args)


def _on_signal(signum: int, frame: FrameType | None) -> Any:
    try:
        _note(of_signal(signum, frame), None)
    except Exception:  # pragma: no cover - never stand between a signal and its handler
        pass
    previous = _prev_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        return previous(signum, frame)
    # The default disposition: say goodbye, then die of the signal as the process would have.
    for watcher in _mine():
        try:
            watcher.close()
        except Exception:  # pragma: no cover
            pass
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
    return None
