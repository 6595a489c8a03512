"""The background writer: the alert book's changes and the runs' records reach SQLite in
batches (one transaction each) on their own thread, so ingest never waits for the disk.

Alerts are announced (log, SSE, Alertmanager) as they change; the writer saves them right
after, and keeps what a failed write held for the next one (``/readyz`` says so meanwhile):
nothing is lost while the process lives, and ``stop()`` writes the rest before the store
closes. Change numbers are reserved in the store ahead of use (``alert_log.SEQ_BLOCK``): a
crash skips the rest of the block; ``stop()`` gives the unused ones back.
"""

from __future__ import annotations

import logging
import threading

from .alert_log import SEQ_COUNTER, AlertLog
from .run_record import RunRecord
from .store import Store, StoreError

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
"""A failed write is retried at least this often (sooner when new changes arrive)."""


class StoreWriter:
    """Owns every write of ``book`` to ``store`` once started."""

    def __init__(self, store: Store, book: AlertLog) -> None:
        self.store, self.book = store, book
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, int], RunRecord] = {}
        self._thread = threading.Thread(target=self._run, name="gradwatch-writer", daemon=True)
        self.batches = 0
        """Transactions written."""

    def start(self) -> None:
        self.book.write_behind(self._wake.set)
        self._thread.start()

    def save_runs(self, records: list[RunRecord]) -> None:
        """Queue run records (a newer record of a rank replaces a queued one)."""
        with self._lock:
            self._runs.update({(r.run, r.rank): r for r in records})
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread and write what is left on the caller's thread; True when all of it
        is in the store."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.book.write_through()
        return self.write()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RETRY_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.write()
            except Exception:  # the writer must not die: what it held is retried
                log.exception("background write failed unexpectedly")

    def write(self) -> bool:
        """One batch: every pending alert change and run record, one transaction."""
        batch = self.book.take()
        with self._lock:
            runs, self._runs = self._runs, {}
        counters = [] if batch.counter is None else [(SEQ_COUNTER, batch.counter)]
        try:
            self.store.save_batch(batch.rows, sorted(batch.deleted), counters, list(runs.values()))
        except StoreError as exc:
            self.book.put_back(batch, exc)
            with self._lock:
                for key, record in runs.items():
                    self._runs.setdefault(key, record)
            return False
        self.book.done(batch)
        self.batches += 1
        return True

    @property
    def pending_runs(self) -> int:
        with self._lock:
            return len(self._runs)
