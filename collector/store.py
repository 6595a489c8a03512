"""SQLite persistence for alerts and runs (standard library, WAL mode, one shared connection)."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .alert import Alert

if TYPE_CHECKING:
    from .state import RankState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL, severity TEXT NOT NULL, state TEXT NOT NULL,
    run TEXT NOT NULL, rank INTEGER NOT NULL, parameter TEXT,
    step INTEGER NOT NULL, value REAL, threshold REAL,
    message TEXT NOT NULL, action TEXT NOT NULL,
    started_at REAL NOT NULL, updated_at REAL NOT NULL, resolved_at REAL,
    acked INTEGER NOT NULL DEFAULT 0, history TEXT NOT NULL DEFAULT '[]',
    first_step INTEGER NOT NULL DEFAULT -1
);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state);
CREATE INDEX IF NOT EXISTS alerts_resolved ON alerts (resolved_at);
CREATE TABLE IF NOT EXISTS runs (
    run TEXT NOT NULL, rank INTEGER NOT NULL, host TEXT NOT NULL, session TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, last_step INTEGER NOT NULL,
    ended INTEGER NOT NULL, frames INTEGER NOT NULL, dropped INTEGER NOT NULL,
    PRIMARY KEY (run, rank)
);
"""

_COLUMNS = (
    "id rule severity state run rank parameter step value threshold message action "
    "started_at updated_at resolved_at acked history first_step"
).split()


@dataclass(frozen=True)
class RunRecord:
    """One rank of one run as persisted."""

    run: str
    rank: int
    host: str
    session: str
    first_seen: float
    last_seen: float
    last_step: int
    ended: bool
    frames: int
    dropped: int

    @classmethod
    def of(cls, s: RankState) -> RunRecord:
        """The persisted view of a live rank."""
        return cls(
            s.run, s.rank, s.hello.host, s.hello.session, s.first_seen, s.last_seen,
            s.last_step, s.ended, s.frames, s.dropped,
        )  # fmt: skip


def _num(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


class Store:
    """Alerts and runs in one SQLite file; every method is thread-safe."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -------------------------------------------------------------------- alerts

    def save_alerts(self, alerts: Iterable[Alert]) -> None:
        """Insert or update alerts in one transaction."""
        rows = [
            (
                a.id, a.rule, a.severity, a.state, a.run, a.rank, a.parameter, a.step,
                _num(a.value), _num(a.threshold), a.message, a.action, a.started_at,
                a.updated_at, a.resolved_at, int(a.acked),
                json.dumps([[s, _num(v)] for s, v in a.history]), a.first_step,
            )
            for a in alerts
        ]  # fmt: skip
        if not rows:
            return
        marks = ",".join("?" * len(_COLUMNS))
        with self._lock, self._db:
            self._db.executemany(
                f"INSERT OR REPLACE INTO alerts ({','.join(_COLUMNS)}) VALUES ({marks})", rows
            )

    def delete_alerts(self, ids: Iterable[int]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM alerts WHERE id = ?", [(i,) for i in ids])

    def load_alerts(self) -> list[Alert]:
        """Every stored alert, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {','.join(_COLUMNS)} FROM alerts ORDER BY id"
            ).fetchall()
        return [_alert(dict(zip(_COLUMNS, row, strict=True))) for row in rows]

    def max_alert_id(self) -> int:
        with self._lock:
            (value,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM alerts").fetchone()
        return int(value)

    def prune(self, older_than: float) -> list[int]:
        """Delete resolved alerts resolved before ``older_than``; return their ids."""
        with self._lock, self._db:
            ids = [
                int(r[0])
                for r in self._db.execute(
                    "SELECT id FROM alerts WHERE state = 'resolved' AND resolved_at < ?",
                    (older_than,),
                )
            ]
            self._db.execute(
                "DELETE FROM alerts WHERE state = 'resolved' AND resolved_at < ?", (older_than,)
            )
        return ids

    # -------------------------------------------------------------------- runs

    def save_runs(self, records: Iterable[RunRecord]) -> None:
        rows = [
            (r.run, r.rank, r.host, r.session, r.first_seen, r.last_seen, r.last_step,
             int(r.ended), r.frames, r.dropped)
            for r in records
        ]  # fmt: skip
        if rows:
            with self._lock, self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)", rows
                )

    def load_runs(self) -> list[RunRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs ORDER BY run, rank").fetchall()
        return [
            RunRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9])
            for r in rows
        ]

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


def _alert(row: dict[str, Any]) -> Alert:
    pairs = json.loads(row.pop("history"))
    history = [(int(s), math.nan if v is None else float(v)) for s, v in pairs]
    row["acked"] = bool(row["acked"])
    return Alert(history=history, **row)
