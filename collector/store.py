"""SQLite persistence for alerts and runs (standard library, WAL mode, one shared connection).

Both tables are derived from their records (:class:`Alert`, :class:`RunRecord`) by
:class:`~gradwatch.collector.table.Table`: adding a field to a record adds the column. Every
failure (disk full, I/O error, a read-only file) is raised as :class:`StoreError`; the store
remembers the latest write error until a write succeeds again (``/readyz`` reports it).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .alert import Alert
from .run_record import RunRecord
from .table import Table


@dataclass(frozen=True)
class Counter:
    """A named number that must survive restarts (the alert change sequence)."""

    name: str
    value: int


ALERTS: Table[Alert] = Table(Alert, "alerts", key=("id",))
RUNS: Table[RunRecord] = Table(RunRecord, "runs", key=("run", "rank"))
COUNTERS: Table[Counter] = Table(Counter, "counters", key=("name",))
_INDEXES = """
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state);
CREATE INDEX IF NOT EXISTS alerts_resolved ON alerts (resolved_at);
CREATE INDEX IF NOT EXISTS runs_last_seen ON runs (last_seen);
"""
T = TypeVar("T")


class StoreError(Exception):
    """The database could not be opened, read or written; the message says why."""


def _explain(path: str, exc: sqlite3.Error) -> str:
    """Why ``path`` cannot be used, in terms of the file system when that is the cause."""
    p = Path(path)
    if p.is_dir():
        return f"{path} is a directory, not a database file"
    if not p.parent.is_dir():
        return f"folder {p.parent} does not exist"
    if p.exists() and not os.access(p, os.W_OK):
        return f"{path} is read-only ({exc})"
    if not p.exists() and not os.access(p.parent, os.W_OK):
        return f"folder {p.parent} is not writable"
    return f"{path}: {exc}"


class Store:
    """Alerts and runs in one SQLite file; every method is thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self.error: str | None = None
        """The latest write error, None once a write succeeded again."""
        self.failures = 0
        """Writes that failed, in total."""
        self._index: dict[str, float] | None = None
        """Each stored run's latest ``last_seen``, loaded on first use and kept current."""
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(_explain(self.path, exc)) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._db:
                ALERTS.create(self._db)
                RUNS.create(self._db)
                COUNTERS.create(self._db)
                self._db.executescript(_INDEXES)
            self._db.execute("BEGIN IMMEDIATE")  # a read-only file fails here, not at first use
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(_explain(self.path, exc)) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one transaction; record and raise a failure as StoreError."""
        try:
            with self._lock, self._db:
                out = fn(self._db)
        except sqlite3.Error as exc:
            self.failures += 1
            self.error = str(exc)
            raise StoreError(f"{self.path}: {exc}") from None
        self.error = None
        return out

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    # -------------------------------------------------------------------- alerts

    def save_alerts(self, alerts: Iterable[Alert]) -> None:
        """Insert or update alerts in one transaction."""
        rows = [ALERTS.row(a) for a in alerts]
        if rows:
            self._write(lambda db: db.executemany(ALERTS.upsert_sql(), rows))

    def delete_alerts(self, ids: Iterable[int]) -> None:
        rows = [(i,) for i in ids]
        if rows:
            self._write(lambda db: db.executemany("DELETE FROM alerts WHERE id = ?", rows))

    def load_alerts(self, resolved: int | None = None) -> list[Alert]:
        """Stored alerts, oldest first: every open one, and the latest ``resolved`` resolved
        ones (all when None)."""
        if resolved is None:
            rows = self._read(ALERTS.select_sql(order="id"))
        else:
            rows = self._read(ALERTS.select_sql("state != 'resolved'", order="id"))
            latest = ALERTS.select_sql("state = 'resolved'", order="id DESC") + " LIMIT ?"
            rows = sorted(rows + self._read(latest, (resolved,)), key=lambda r: int(r[0]))
        return [ALERTS.record(row) for row in rows]

    def max_alert_id(self) -> int:
        ((value,),) = self._read("SELECT COALESCE(MAX(id), 0) FROM alerts")
        return int(value)

    def prune(self, older_than: float) -> list[int]:
        """Delete resolved alerts resolved before ``older_than``, and runs last seen before it;
        return the alerts' ids."""
        where = "state = 'resolved' AND resolved_at < ?"

        def prune(db: sqlite3.Connection) -> list[int]:
            found = db.execute(f"SELECT id FROM alerts WHERE {where}", (older_than,))
            ids = [int(r[0]) for r in found]
            db.execute(f"DELETE FROM alerts WHERE {where}", (older_than,))
            db.execute("DELETE FROM runs WHERE last_seen < ?", (older_than,))
            return ids

        ids = self._write(prune)
        with self._lock:
            self._index = None  # some ranks of a run may be gone: read it again when asked
        return ids

    # -------------------------------------------------------------------- runs

    def save_runs(self, records: Iterable[RunRecord]) -> None:
        records = list(records)
        rows = [RUNS.row(r) for r in records]
        if rows:
            self._write(lambda db: db.executemany(RUNS.upsert_sql(), rows))
            self._indexed(records)

    def load_runs(self, runs: Sequence[str] | None = None) -> list[RunRecord]:
        """Stored ranks of ``runs`` (every run when None), by run and rank."""
        if runs is None:
            rows = self._read(RUNS.select_sql(order="run, rank"))
        else:
            rows = []
            for i in range(0, len(runs), 500):  # SQLite's bound on parameters per statement
                chunk = runs[i : i + 500]
                where = f"run IN ({','.join('?' * len(chunk))})"
                rows += self._read(RUNS.select_sql(where, order="run, rank"), chunk)
        return [RUNS.record(row) for row in rows]

    def load_run(self, run: str, rank: int) -> RunRecord | None:
        """The stored record of one rank, if any."""
        rows = self._read(RUNS.select_sql("run = ? AND rank = ?"), (run, rank))
        return RUNS.record(rows[0]) if rows else None

    def run_index(self) -> dict[str, float]:
        """Every stored run with the latest ``last_seen`` of its ranks (a copy; read from the
        database once, then kept current by ``save_runs`` and ``prune``)."""
        if self._index is None:
            rows = self._read("SELECT run, MAX(last_seen) FROM runs GROUP BY run")
            loaded = {str(run): float(seen) for run, seen in rows}
            with self._lock:
                if self._index is None:
                    self._index = loaded
        with self._lock:
            return dict(self._index or {})

    # -------------------------------------------------------------------- batches

    def save_batch(
        self,
        alert_rows: Sequence[tuple[Any, ...]],
        deleted: Iterable[int],
        counters: Sequence[tuple[str, int]],
        runs: Sequence[RunRecord],
    ) -> None:
        """Alert rows (``ALERTS.row``), deletions, counters and run records in one
        transaction (the background writer's)."""
        gone = [(i,) for i in deleted]
        counter_rows = [COUNTERS.row(Counter(n, v)) for n, v in counters]
        run_rows = [RUNS.row(r) for r in runs]

        def write(db: sqlite3.Connection) -> None:
            if gone:
                db.executemany("DELETE FROM alerts WHERE id = ?", gone)
            if counter_rows:
                db.executemany(COUNTERS.upsert_sql(), counter_rows)
            if alert_rows:
                db.executemany(ALERTS.upsert_sql(), alert_rows)
            if run_rows:
                db.executemany(RUNS.upsert_sql(), run_rows)

        if gone or counter_rows or alert_rows or run_rows:
            self._write(write)
            self._indexed(runs)

    def _indexed(self, records: Sequence[RunRecord]) -> None:
        with self._lock:  # readers copy the index under the same lock
            index = self._index
            if index is not None:
                for r in records:
                    index[r.run] = max(index.get(r.run, r.last_seen), r.last_seen)

    # -------------------------------------------------------------------- counters

    def save_counter(self, name: str, value: int) -> None:
        row = COUNTERS.row(Counter(name, value))
        self._write(lambda db: db.execute(COUNTERS.upsert_sql(), row))

    def counter(self, name: str) -> int:
        """The counter's saved value; 0 if it was never saved."""
        rows = self._read(COUNTERS.select_sql(where="name = ?"), (name,))
        return COUNTERS.record(rows[0]).value if rows else 0

    # -------------------------------------------------------------------- health

    def writable(self) -> bool:
        """True when a write transaction can be opened (for /readyz)."""
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("ROLLBACK")
            return True
        except sqlite3.Error:
            return False
