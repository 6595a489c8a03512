"""One alert per job: findings of one rule on several ranks of a run join one alert (``ranks``),
its ``rank`` is the origin, and it resolves once every rank has cleared."""

from __future__ import annotations

from pathlib import Path

from gradwatch.collector.book import AlertBook, Policy
from gradwatch.collector.rules.base import Finding
from gradwatch.collector.store import Store

NAN = Policy("non_finite", "critical", for_checks=0, clear_checks=2, cooldown_seconds=60)
HELD = Policy("frozen_parameters", "error", for_checks=3, clear_checks=1, cooldown_seconds=0)


def finding(
    parameter: str | None = "w", origin: bool = False, claim: int | None = None, msg: str = "m"
) -> Finding:
    return Finding("non_finite", parameter, 1.0, 0.0, msg, "fix", origin=origin, claim_step=claim)


def test_book_joins_ranks_of_one_run_into_one_alert_that_resolves_when_all_clear() -> None:
    book, changes = AlertBook(), []
    book.subscribe(lambda a: changes.append((a.state, a.rank, list(a.ranks))))
    for rank in (2, 0, 3):
        book.observe(NAN, "job", rank, 10, [finding()], now=1)
    [alert] = book.alerts()
    assert (alert.rank, alert.ranks, alert.state) == (2, [0, 2, 3], "firing")
    assert changes == [("firing", 2, [2]), ("firing", 2, [0, 2]), ("firing", 2, [0, 2, 3])]
    assert [a.id for a in book.alerts(rank=3)] == [alert.id] and book.alerts(rank=1) == []
    assert book.firing_at([("job", 0), ("job", 1)]) == {("job", 0): 1}
    for _ in range(2):  # ranks 0 and 2 clear; rank 3 is still affected
        book.observe(NAN, "job", 0, 11, [], now=2)
        book.observe(NAN, "job", 2, 11, [], now=2)
    assert book.alerts()[0].state == "firing"
    book.observe(NAN, "job", 3, 11, [], now=3)
    book.observe(NAN, "job", 3, 12, [], now=4)
    assert book.alerts()[0].state == "resolved" and book.alerts()[0].ranks == [0, 2, 3]


def test_book_keeps_runs_and_parameters_apart() -> None:
    book = AlertBook()
    book.observe(NAN, "a", 0, 1, [finding("w")], now=1)
    book.observe(NAN, "b", 0, 1, [finding("w")], now=1)
    book.observe(NAN, "a", 1, 1, [finding("v")], now=1)
    assert sorted((a.run, a.parameter, tuple(a.ranks)) for a in book.alerts()) == [
        ("a", "v", (1,)),
        ("a", "w", (0,)),
        ("b", "w", (0,)),
    ]


def test_book_origin_is_the_earliest_claim_while_the_alert_is_young() -> None:
    book = AlertBook(origin_seconds=30)
    book.observe(NAN, "job", 0, 60, [finding(msg="grads nan")], now=1)  # reached by all-reduce
    book.observe(NAN, "job", 0, 61, [finding(origin=True, claim=61, msg="loss nan")], now=2)
    book.observe(NAN, "job", 1, 60, [finding(origin=True, claim=60, msg="loss nan 1")], now=3)
    [alert] = book.alerts()
    assert (alert.rank, alert.ranks, alert.message, alert.first_step) == (
        1,
        [0, 1],
        "loss nan 1",
        60,
    )
    book.observe(NAN, "job", 0, 62, [finding(origin=True, claim=61, msg="later")], now=4)
    assert book.alerts()[0].rank == 1 and book.alerts()[0].message == "loss nan 1"
    book.observe(NAN, "job", 2, 59, [finding(origin=True, claim=59)], now=40)  # too late
    assert book.alerts()[0].rank == 1 and book.alerts()[0].ranks == [0, 1, 2]


def test_book_run_level_checks_name_their_origin_and_clear_absent_ranks() -> None:
    book = AlertBook(origin_seconds=30)
    stalled = Policy("rank_stalled", "error", for_checks=1, clear_checks=1, cooldown_seconds=0)
    book.observe_run(stalled, "job", [(0, 5, finding(None)), (1, 5, finding(None))], now=1)
    assert book.alerts()[0].rank == 0  # no culprit known yet: the first rank
    both = [(0, 5, finding(None)), (1, 5, finding(None, origin=True, msg="culprit 1"))]
    book.observe_run(stalled, "job", both, now=2)
    [alert] = book.alerts()
    assert (alert.rank, alert.ranks, alert.message) == (1, [0, 1], "culprit 1")
    book.observe_run(stalled, "job", [(1, 5, finding(None, origin=True))], now=3)
    assert book.alerts()[0].state == "firing"  # rank 0 cleared, rank 1 still stuck
    book.observe_run(stalled, "job", [], now=4)
    assert book.alerts()[0].state == "resolved"


def test_book_fires_once_any_rank_held_for_checks_and_drops_a_pending_job_alert() -> None:
    book = AlertBook()
    for now in (1, 2):
        book.observe(HELD, "job", 0, now, [finding()], now=now)
        book.observe(HELD, "job", 1, now, [finding()], now=now)
    assert book.alerts()[0].state == "pending"  # two checks on each rank, not four
    book.observe(HELD, "job", 1, 3, [finding()], now=3)
    assert book.alerts()[0].state == "firing"
    other = AlertBook()
    other.observe(HELD, "job", 0, 1, [finding()], now=1)
    other.observe(HELD, "job", 1, 1, [finding()], now=1)
    other.observe(HELD, "job", 0, 2, [], now=2)
    other.observe(HELD, "job", 1, 2, [], now=2)
    assert other.alerts() == []


def test_book_resolve_rank_clears_one_rank_at_a_time() -> None:
    book = AlertBook()
    book.observe(NAN, "job", 0, 1, [finding()], now=1)
    book.observe(NAN, "job", 1, 1, [finding()], now=1)
    book.resolve_rank("job", 0, now=2)
    assert book.alerts()[0].state == "firing"
    book.resolve_rank("job", 1, now=3)
    assert book.alerts()[0].state == "resolved" and book.alerts()[0].resolved_at == 3
    again = AlertBook()
    for rank in (0, 1):
        again.observe(NAN, "job", rank, 1, [finding()], now=1)
    again.observe(NAN, "job", 0, 2, [], now=2)
    again.observe(NAN, "job", 0, 3, [], now=3)  # rank 0 clear for clear_checks
    again.resolve_rank("job", 1, now=4)  # rank 1 ended
    assert again.alerts()[0].state == "resolved"


def test_book_job_alert_survives_a_restart_with_its_ranks(tmp_path: Path) -> None:
    book = AlertBook(Store(tmp_path / "j.db"))
    for rank in (0, 1, 2):
        book.observe(NAN, "job", rank, 1, [finding()], now=1)
    book.flush()
    book.store.close()  # type: ignore[union-attr]
    again = AlertBook(Store(tmp_path / "j.db"))
    [alert] = again.alerts()
    assert alert.ranks == [0, 1, 2] and alert.state == "firing"
    again.observe(NAN, "job", 3, 2, [finding(origin=True, claim=0)], now=2)  # origin fixed
    assert again.alerts()[0].ranks == [0, 1, 2, 3] and again.alerts()[0].rank == 0
    for rank in (0, 1, 2, 3):
        again.observe(NAN, "job", rank, 3, [], now=3)
        again.observe(NAN, "job", rank, 4, [], now=4)
    assert again.alerts()[0].state == "resolved"
