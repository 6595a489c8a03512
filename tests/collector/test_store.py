"""The SQLite store: tables derived from the records, and older databases migrated."""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from pathlib import Path

from gradwatch.collector.alert import Alert
from gradwatch.collector.run_record import RunRecord
from gradwatch.collector.store import ALERTS, RUNS, Store


def _alert(**kw: object) -> Alert:
    base = Alert(3, "non_finite", "critical", "firing", "r", 1, "w", 9, math.inf, 0.0,
                 "m", "a", 1.0, 2.0, history=[(8, 1.0), (9, math.nan)], first_step=8)  # fmt: skip
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_store_columns_are_the_records_fields() -> None:
    assert ALERTS.names == tuple(f.name for f in dataclasses.fields(Alert))
    assert RUNS.names == tuple(f.name for f in dataclasses.fields(RunRecord))


def test_store_round_trips_alerts_and_runs(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    alert = _alert(acked=True, resolved_at=None)
    run = RunRecord("r", 1, "h", "abc", 1.0, 2.0, 30, True, 31, 2)
    store.save_alerts([alert])
    store.save_runs([run])
    store.close()
    again = Store(tmp_path / "s.db")
    [loaded] = again.load_alerts()
    assert loaded.value == math.inf
    assert loaded.history[0] == (8, 1.0) and math.isnan(loaded.history[1][1])
    assert dataclasses.replace(loaded, history=alert.history) == alert
    assert again.load_runs() == [run]


def test_store_adds_columns_an_older_database_lacks(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE alerts (id INTEGER PRIMARY KEY, rule TEXT NOT NULL, severity TEXT NOT NULL,"
        " state TEXT NOT NULL, run TEXT NOT NULL, rank INTEGER NOT NULL, parameter TEXT,"
        " step INTEGER NOT NULL, value REAL, threshold REAL, message TEXT NOT NULL,"
        " action TEXT NOT NULL, started_at REAL NOT NULL, updated_at REAL NOT NULL,"
        " resolved_at REAL, acked INTEGER NOT NULL DEFAULT 0,"
        " history TEXT NOT NULL DEFAULT '[]')"
    )
    db.execute(
        "INSERT INTO alerts VALUES (1,'loss_spike','error','firing','r',0,NULL,5,2.0,1.0,"
        "'m','a',1.0,1.0,NULL,0,'[[5, 2.0]]')"
    )
    db.commit()
    db.close()
    [alert] = Store(path).load_alerts()
    assert alert.first_step == -1 and alert.history == [(5, 2.0)] and alert.rule == "loss_spike"
