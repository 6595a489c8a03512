"""Fan-out of alert changes to Server-Sent Events clients (thread-safe, never blocks ingest)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from .alert import Alert

QUEUE_SIZE = 1000


class AlertStream:
    """Subscribe ``publish`` to the alert book; each HTTP client iterates ``events()``."""

    def __init__(self, keepalive_seconds: float = 15.0) -> None:
        self.keepalive_seconds = keepalive_seconds
        self._lock = threading.Lock()
        self._clients: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str | None]]] = set()
        self._closed = threading.Event()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, alert: Alert) -> None:
        """Book listener: queue the change for every client; drop it for a client that lags."""
        payload = alert.to_json().decode()
        with self._lock:
            clients = list(self._clients)
        for loop, queue in clients:
            try:
                loop.call_soon_threadsafe(_offer, queue, payload)
            except RuntimeError:  # that client's loop is closed
                pass

    def close(self) -> None:
        """End every stream (on shutdown)."""
        self._closed.set()
        with self._lock:
            clients = list(self._clients)
        for loop, queue in clients:
            try:
                loop.call_soon_threadsafe(_offer, queue, None)
            except RuntimeError:
                pass

    async def events(self) -> AsyncIterator[str]:
        """SSE text for one client: ``event: alert`` lines and keep-alive comments."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_SIZE)
        entry = (loop, queue)
        with self._lock:
            self._clients.add(entry)
        try:
            yield ": connected\n\n"
            waited = 0.0
            while not self._closed.is_set():
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    waited += 0.5
                    if waited >= self.keepalive_seconds:
                        waited = 0.0
                        yield ": keep-alive\n\n"
                    continue
                if item is None:
                    break
                waited = 0.0
                yield f"event: alert\ndata: {item}\n\n"
        finally:
            with self._lock:
                self._clients.discard(entry)


def _offer(queue: asyncio.Queue[str | None], item: str | None) -> None:
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        pass
