"""``--workers``: which worker a frame goes to, and the alert books of several processes (ids
in one space, the main book keeping the workers' changes)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import msgpack
import pytest

from gradwatch import wire
from gradwatch.collector.alert import COLLECTOR_RUN
from gradwatch.collector.book import AlertBook, Policy
from gradwatch.collector.rules.base import Finding
from gradwatch.collector.shard import Part, run_of, shard_of
from gradwatch.collector.store import Store
from tests.helpers.fake_rank import FakeRank

NAN = Policy("non_finite", "critical", for_checks=1, clear_checks=1, cooldown_seconds=0)
PENDING = Policy("frozen_parameters", "error", for_checks=3, clear_checks=1, cooldown_seconds=0)


def finding(rule: str = "non_finite") -> Finding:
    return Finding(rule, "w", 1.0, 0.0, "bad", "fix it")


def test_run_of_reads_the_run_of_every_kind_of_frame() -> None:
    r = FakeRank("job-7", rank=3)
    for frame in (r.hello(), r.stats(1), r.bye(1), r.heartbeat(1)):
        assert run_of(wire.encode(frame)) == "job-7"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1garbage",
        msgpack.packb([1, 2]),
        msgpack.packb({"v": 1, "run": 5}),
        msgpack.packb({"a": 1, "b": 2, "c": 3, "d": 4, "run": "late"}),
    ],  # fmt: skip
)
def test_run_of_gives_none_for_what_is_not_a_frame(data: bytes) -> None:
    assert run_of(data) is None
    assert shard_of(run_of(data), 4) == 0  # a worker counts it as rejected


def test_shard_of_is_stable_and_spreads_runs() -> None:
    names = [f"run-{i}" for i in range(2000)]
    first = [shard_of(n, 4) for n in names]
    assert first == [shard_of(n, 4) for n in names]  # no per-process hash seed
    counts = Counter(first)
    assert sorted(counts) == [0, 1, 2, 3] and min(counts.values()) > 2000 / 4 * 0.8
    assert {shard_of(n, 1) for n in names} == {0}


def test_parts_judge_disjoint_runs() -> None:
    main, workers = Part(3), [Part(3, k) for k in range(3)]
    assert main.judges(COLLECTOR_RUN) and not any(w.judges(COLLECTOR_RUN) for w in workers)
    for name in (f"r{i}" for i in range(50)):
        assert not main.judges(name)
        assert [w.judges(name) for w in workers].count(True) == 1


def test_books_sharing_ids_never_meet_and_continue_after_a_reload(tmp_path: Path) -> None:
    books = [AlertBook(), AlertBook()]
    for slot, book in enumerate(books, start=1):
        book.share_ids(slot, 3)
        for run in ("a", "b", "c"):
            book.observe(NAN, run, 0, 1, [finding()], now=1)
    ids = [a.id for book in books for a in book.alerts()]
    assert len(set(ids)) == 6 and sorted(ids) == [2, 3, 5, 6, 8, 9]

    store = Store(tmp_path / "db")
    main = AlertBook(store, judges=Part(2).judges)
    main.share_ids(0, 3)
    for book in books:
        for alert in book.alerts():
            main.mirror(alert)
    main.flush()
    worker = AlertBook(judges=Part(2, 0).judges)
    worker.share_ids(1, 3)
    worker.adopt(store)
    mine = [a for a in main.alerts() if Part(2, 0).judges(a.run)]
    assert {a.id for a in worker.alerts()} == {a.id for a in mine}  # only its runs' alerts
    worker.observe(NAN, "new-run", 0, 1, [finding()], now=2)
    [new] = worker.alerts(run="new-run")
    assert new.id == 11 and (new.id - 1) % 3 == 1  # its slot, above every id saved


def test_mirror_numbers_saves_and_announces_and_keeps_acks(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    main, heard = AlertBook(store), []
    main.subscribe(lambda a: heard.append((a.id, a.state, a.seq)))
    worker = AlertBook()
    worker.share_ids(1, 2)
    worker.subscribe(lambda a: main.mirror(a, dropped=worker.get(a.id) is None))
    worker.forward = main.mirror_updates
    worker.observe(NAN, "r", 0, 5, [finding()], now=1)
    [alert] = main.alerts()
    assert main.ack(alert.id) is not None
    worker.observe(NAN, "r", 0, 6, [finding()], now=2)  # held: an update, not a change
    assert main.get(alert.id).step == 5  # type: ignore[union-attr]
    worker.flush()
    updated = main.get(alert.id)
    assert updated is not None and (updated.step, updated.seq, updated.acked) == (6, 2, True)
    assert updated.history == [(5, 1.0), (6, 1.0)]
    worker.observe(NAN, "r", 0, 7, [], now=3)  # resolves: the worker does not know of the ack
    assert heard == [(alert.id, "firing", 1), (alert.id, "firing", 2), (alert.id, "resolved", 3)]
    main.flush()
    [saved] = Store(tmp_path / "db").load_alerts()
    assert (saved.id, saved.state, saved.acked, saved.seq) == (alert.id, "resolved", True, 3)

    worker.observe(PENDING, "r", 0, 7, [finding("frozen_parameters")], now=3)
    pending = main.alerts(state="pending")
    assert len(pending) == 1
    worker.observe(PENDING, "r", 0, 8, [], now=4)  # cleared before it fired: dropped
    assert main.alerts(state="pending") == [] and main.get(pending[0].id) is None
    main.flush()
    assert [a.id for a in Store(tmp_path / "db").load_alerts()] == [alert.id]
