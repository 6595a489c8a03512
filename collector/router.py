"""``--workers N``: the main process's ingest thread. It owns the agents' ROUTER socket (CURVE,
size limit and refusals as in one process) and sends each message whole, with its sender's
identity, to the worker of its run (shard.py) without decoding it; from the workers' inbox it
takes alert changes into the main book (``AlertLog.mirror``) and sends their actions to the
agents on the same socket. The engine here judges only the collector-level rules.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
import zmq

from .book import AlertBook
from .ingest import Ingest, Message
from .shard import run_of, shard_of
from .store import ALERTS
from .worker import ACTION, ALERT, DONE, UPDATE
from .workers import STOP_SECONDS, Workers


class Router(Ingest):
    """The agents' socket of a ``--workers`` collector (see the module)."""

    def __init__(self, *args: Any, workers: Workers, book: AlertBook, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workers, self.book = workers, book

    def stop(self, timeout: float = 10.0 + STOP_SECONDS) -> bool:
        """As :meth:`Ingest.stop`, with time for the workers to finish."""
        return super().stop(timeout)

    def handle(self, data: bytes, identity: bytes | None = None) -> None:
        self.health.messages += 1
        out = self.workers.frames[shard_of(run_of(data), self.workers.count)]
        try:
            out.send_multipart([identity or b"", data], zmq.NOBLOCK)
        except zmq.Again:  # the worker's queue is full: it is far behind
            self.health.rejected["overloaded"] += 1

    def handle_batch(self, batch: list[Message]) -> None:
        for data, identity in batch:
            self.handle(data, identity)

    def read_inbox(self, parts: list[bytes]) -> None:
        """One message from a worker: an alert change, updates, an action, or done."""
        kind = parts[0]
        if kind == ALERT:
            row, dropped = msgpack.unpackb(parts[1])
            self.book.mirror(ALERTS.record(row), dropped)
        elif kind == UPDATE:
            self.book.mirror_updates(ALERTS.record(row) for row in msgpack.unpackb(parts[1]))
        elif kind == ACTION:
            self._send_to(parts[1], parts[2])
        elif kind == DONE:
            self.workers.on_done(parts[1], parts[2])

    def _inbox(self) -> None:
        inbox = self.workers.inbox
        while True:
            try:
                parts = inbox.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._read_guarded(parts)

    def _read_guarded(self, parts: list[bytes]) -> None:
        self._guarded(lambda: self.read_inbox(parts))

    def _also_read(self) -> list[zmq.Socket[bytes]]:
        return [self.workers.inbox]

    def _read_also(self, ready: dict[Any, int]) -> None:
        if self.workers.inbox in ready:
            self._inbox()

    def _tick(self) -> None:
        self._guarded(self.engine.tick)  # the collector-level rules, retention
        self._guarded(lambda: self.workers.revive(time.monotonic()))

    def _finish_received(self) -> None:
        """Forward what was received (until the deadline), then let the workers finish theirs
        and keep their last alert changes."""
        super()._finish_received()
        self.workers.stop(self._read_guarded)
