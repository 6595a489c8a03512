"""Server-Sent Events of alert changes: numbered, resumable after a disconnect or a restart.

Each change the alert book makes carries a sequence number (``Alert.seq``) that is persisted
with it; it is the event's id. A client that reconnects with ``Last-Event-ID: N`` first gets
every change numbered above N (:meth:`AlertBook.changes_since`), then the live ones. Live and
replayed changes come from the same place, read by one cursor, so none is missed or repeated:
the book's listener only wakes the clients, and each client reads what lies past its cursor.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi.sse import format_sse_event

from .alert import Alert
from .book import AlertBook


@dataclass(frozen=True)
class AlertFilter:
    """Which changes a stream client wants (None: any)."""

    run: str | None = None
    rank: int | None = None
    rule: str | None = None
    severity: str | None = None
    state: str | None = None

    def __call__(self, alert: Alert) -> bool:
        return (
            (self.run is None or alert.run == self.run)
            and (self.rank is None or self.rank in alert.covers)
            and (self.rule is None or alert.rule == self.rule)
            and (self.severity is None or alert.severity == self.severity)
            and (self.state is None or alert.state == self.state)
        )


_Waker = tuple[asyncio.AbstractEventLoop, asyncio.Event]


class AlertStream:
    """Subscribe ``publish`` to the alert book; each HTTP client iterates ``events()``."""

    def __init__(self, book: AlertBook, keepalive_seconds: float = 15.0) -> None:
        self.book = book
        self.keepalive_seconds = keepalive_seconds
        self._lock = threading.Lock()
        self._clients: set[_Waker] = set()
        self._closed = threading.Event()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, alert: Alert) -> None:
        """Book listener (any thread, never blocks): wake every client to read its changes."""
        self._wake_all()

    def close(self) -> None:
        """End every stream (on shutdown)."""
        self._closed.set()
        self._wake_all()

    def _wake_all(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for loop, wake in clients:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # that client's loop is closed
                pass

    async def events(
        self,
        last_event_id: int | None = None,
        wanted: Callable[[Alert], bool] | None = None,
    ) -> AsyncIterator[bytes]:
        """One client's events, encoded: a ``connected`` comment whose id is where the stream
        starts, the changes after ``last_event_id`` (none when None), live changes and
        keep-alive comments carrying the position."""
        wake = asyncio.Event()
        waker = (asyncio.get_running_loop(), wake)
        with self._lock:
            self._clients.add(waker)  # before reading the position: no change falls between
        try:
            head = self.book.seq
            if last_event_id is None:
                cursor = head
            else:  # an id ahead of the book: its history was reset, so send all of it
                cursor = last_event_id if last_event_id <= head else 0
            yield format_sse_event(comment="connected", id=str(cursor))
            timeout = self.keepalive_seconds or None
            while not self._closed.is_set():
                wake.clear()
                for alert in self.book.changes_since(cursor):
                    cursor = alert.seq
                    if wanted is None or wanted(alert):
                        data = alert.to_json().decode()
                        yield format_sse_event(event="alert", id=str(alert.seq), data_str=data)
                if self._closed.is_set():
                    break
                try:
                    await asyncio.wait_for(wake.wait(), timeout)
                except asyncio.TimeoutError:  # the id moves a filtered client past skipped changes
                    yield format_sse_event(comment="keep-alive", id=str(cursor))
        finally:
            with self._lock:
                self._clients.discard(waker)
