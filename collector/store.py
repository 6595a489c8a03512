"""SQLite persistence for alerts and runs (standard library, WAL mode, one shared connection).

Both tables are derived from their records (:class:`Alert`, :class:`RunRecord`) by
:class:`~gradwatch.collector.table.Table`: adding a field to a record adds the column.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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
"""


class Store:
    """Alerts and runs in one SQLite file; every method is thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            ALERTS.create(self._db)
            RUNS.create(self._db)
            COUNTERS.create(self._db)
            self._db.executescript(_INDEXES)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -------------------------------------------------------------------- alerts

    def save_alerts(self, alerts: Iterable[Alert]) -> None:
        """Insert or update alerts in one transaction."""
        rows = [ALERTS.row(a) for a in alerts]
        if rows:
            with self._lock, self._db:
                self._db.executemany(ALERTS.upsert_sql(), rows)

    def delete_alerts(self, ids: Iterable[int]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM alerts WHERE id = ?", [(i,) for i in ids])

    def load_alerts(self) -> list[Alert]:
        """Every stored alert, oldest first."""
        with self._lock:
            rows = self._db.execute(ALERTS.select_sql(order="id")).fetchall()
        return [ALERTS.record(row) for row in rows]

    def max_alert_id(self) -> int:
        with self._lock:
            (value,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM alerts").fetchone()
        return int(value)

    def prune(self, older_than: float) -> list[int]:
        """Delete resolved alerts resolved before ``older_than``; return their ids."""
        where = "state = 'resolved' AND resolved_at < ?"
        with self._lock, self._db:
            ids = [
                int(r[0])
                for r in self._db.execute(f"SELECT id FROM alerts WHERE {where}", (older_than,))
            ]
            self._db.execute(f"DELETE FROM alerts WHERE {where}", (older_than,))
        return ids

    # -------------------------------------------------------------------- runs

    def save_runs(self, records: Iterable[RunRecord]) -> None:
        rows = [RUNS.row(r) for r in records]
        if rows:
            with self._lock, self._db:
                self._db.executemany(RUNS.upsert_sql(), rows)

    def load_runs(self) -> list[RunRecord]:
        with self._lock:
            rows = self._db.execute(RUNS.select_sql(order="run, rank")).fetchall()
        return [RUNS.record(row) for row in rows]

    # -------------------------------------------------------------------- counters

    def save_counter(self, name: str, value: int) -> None:
        with self._lock, self._db:
            self._db.execute(COUNTERS.upsert_sql(), COUNTERS.row(Counter(name, value)))

    def counter(self, name: str) -> int:
        """The counter's saved value; 0 if it was never saved."""
        with self._lock:
            row = self._db.execute(COUNTERS.select_sql(where="name = ?"), (name,)).fetchone()
        return 0 if row is None else COUNTERS.record(row).value

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
