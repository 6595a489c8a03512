"""The background writer: alerts are announced before they are written, reach SQLite in batches
on the writer's thread, survive a failing database (kept, retried, /readyz-visible), and their
change numbers are never reused after a crash."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gradwatch.collector.alert import Alert
from gradwatch.collector.alert_log import SEQ_BLOCK
from gradwatch.collector.book import AlertBook, Policy
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import build_core
from gradwatch.collector.rules.base import Finding
from gradwatch.collector.store import Store
from gradwatch.collector.writer import StoreWriter
from tests.helpers.fake_rank import FakeRank
from tests.helpers.waiting import wait_until

T = TypeVar("T")
NAN = Policy("non_finite", "critical", for_checks=0, clear_checks=1, cooldown_seconds=0)


class Gate(Store):
    """A store whose writes fail while ``broken`` is set, counting write transactions."""

    broken = False
    writes = 0

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def write(db: sqlite3.Connection) -> T:
            if self.broken:
                raise sqlite3.OperationalError("disk I/O error")
            self.writes += 1
            return fn(db)

        return super()._write(write)


def finding(parameter: str) -> Finding:
    return Finding("non_finite", parameter, math.nan, 0.0, "NaN", "stop")


def test_writer_announces_first_then_saves(tmp_path: Path) -> None:
    store = Gate(tmp_path / "w.db")
    book = AlertBook(store)
    writer = StoreWriter(store, book)
    writer.start()
    heard: list[Alert] = []
    book.subscribe(heard.append)
    for i in range(50):
        book.observe(NAN, f"r{i}", 0, 1, [finding("w")])
    assert len(heard) == 50  # announced without waiting for the disk
    wait_until(lambda: len(Store(store.path).load_alerts()) == 50, 30)
    assert writer.stop()
    assert book.unsaved == 0


def test_writer_keeps_what_a_failed_write_held_and_retries(tmp_path: Path) -> None:
    store = Gate(tmp_path / "w.db")
    core = build_core(CollectorConfig(db_path=store.path), store=store, write_behind=True)
    assert core.writer is not None
    store.broken = True
    for i in range(5):
        r = FakeRank(f"run{i}")
        for frame in (r.hello(), r.stats(1, loss=math.nan)):
            core.engine.on_frame(core.fleet.apply(frame), frame)
    wait_until(lambda: core.book.unsaved == 5, 30)
    assert any("not saved" in p for p in core.problems())
    store.broken = False
    core.engine.tick()  # wakes the writer
    wait_until(lambda: core.book.unsaved == 0 and not core.problems(), 30)
    assert len(Store(store.path).load_alerts()) == 5
    assert {r.run for r in Store(store.path).load_runs()} == {f"run{i}" for i in range(5)}
    assert core.close() == 0


def test_writer_never_reuses_a_change_number_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    store = Store(path)
    book = AlertBook(store)
    book.write_behind(lambda: None)  # a writer that never gets to write
    for i in range(3):
        book.observe(NAN, f"r{i}", 0, 1, [finding("w")])
    seen = book.seq
    # No stop, no flush: as if the process died right after announcing its changes.
    again = AlertBook(Store(path))
    assert again.seq >= seen and again.seq <= seen + SEQ_BLOCK


def test_writer_stopped_cleanly_numbers_on_without_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    store = Store(path)
    book = AlertBook(store)
    writer = StoreWriter(store, book)
    writer.start()
    for i in range(3):
        book.observe(NAN, f"r{i}", 0, 1, [finding("w")])
    assert writer.stop()
    store.close()
    assert AlertBook(Store(path)).seq == 3
