"""AlertBook lifecycle, dedup, cooldown, listeners and SQLite persistence across restarts."""

from __future__ import annotations

from pathlib import Path

from gradwatch.collector.alert import Alert
from gradwatch.collector.book import AlertBook, Policy
from gradwatch.collector.console import ConsoleLog, describe
from gradwatch.collector.rules.base import Finding
from gradwatch.collector.store import Store

P = Policy("frozen_parameters", "error", for_checks=2, clear_checks=2, cooldown_seconds=100)


def finding(value: float = 0.0, parameter: str | None = "w") -> Finding:
    return Finding("frozen_parameters", parameter, value, 1e-12, "frozen", "fix it")


def test_book_pending_then_firing_then_resolved_after_clear_checks() -> None:
    book, seen = AlertBook(), []
    book.subscribe(lambda a: seen.append(a.state))
    book.observe(P, "r", 0, 10, [finding()], now=1)
    assert [a.state for a in book.alerts()] == ["pending"]
    book.observe(P, "r", 0, 11, [finding(1e-13)], now=2)
    [alert] = book.alerts()
    assert (
        alert.state == "firing" and alert.step == 11 and alert.history == [(10, 0.0), (11, 1e-13)]
    )
    book.observe(P, "r", 0, 12, [], now=3)
    assert book.alerts()[0].state == "firing"
    book.observe(P, "r", 0, 13, [], now=4)
    assert book.alerts()[0].state == "resolved" and book.alerts()[0].resolved_at == 4
    assert seen == ["pending", "firing", "resolved"]


def test_book_deduplicates_and_respects_cooldown() -> None:
    book = AlertBook()
    policy = Policy("non_finite", "critical", for_checks=0, clear_checks=1, cooldown_seconds=100)
    for step in range(5):
        book.observe(policy, "r", 0, step, [finding()], now=step)
    assert len(book.alerts()) == 1 and book.alerts()[0].state == "firing"
    book.observe(policy, "r", 0, 6, [], now=6)
    book.observe(policy, "r", 0, 7, [finding()], now=50)  # within cooldown
    assert [a.state for a in book.alerts()] == ["resolved"]
    book.observe(policy, "r", 0, 8, [finding()], now=200)
    assert [a.state for a in book.alerts()] == ["firing", "resolved"]


def test_book_drops_pending_alerts_that_never_fire() -> None:
    book = AlertBook()
    book.observe(P, "r", 0, 1, [finding()], now=1)
    book.observe(P, "r", 0, 2, [], now=2)
    book.observe(P, "r", 0, 3, [], now=3)
    assert book.alerts() == []


def test_book_filters_ack_and_get() -> None:
    book = AlertBook()
    policy = Policy("non_finite", "critical", for_checks=1)
    book.observe(policy, "a", 0, 1, [finding(parameter=None)], now=1)
    book.observe(policy, "b", 1, 1, [finding(parameter=None)], now=2)
    assert [a.run for a in book.alerts()] == ["b", "a"]
    assert [a.run for a in book.alerts(run="a")] == ["a"]
    assert book.alerts(rank=1)[0].run == "b" and book.alerts(since=1.5)[0].run == "b"
    assert book.ack(1) is not None and book.get(1) is not None and book.get(1).acked  # type: ignore[union-attr]
    assert book.ack(99) is None and book.get(99) is None


def test_book_survives_restart_without_loss_or_duplicates(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")
    policy = Policy("non_finite", "critical", for_checks=1, clear_checks=1, cooldown_seconds=0)
    book = AlertBook(Store(db))
    book.observe(policy, "r", 0, 1, [finding(parameter="x")], now=1)
    book.observe(policy, "r", 0, 1, [finding(parameter="y")], now=1)
    book.observe(policy, "r", 0, 2, [finding(parameter="y")], now=2)  # x clears, y stays
    book.observe(policy, "r", 0, 3, [finding(5.0, parameter="y")], now=3)
    book.flush()
    before = {a.id: a for a in book.alerts()}
    assert {a.state for a in before.values()} == {"resolved", "firing"}

    again = AlertBook(Store(db))
    after = {a.id: a for a in again.alerts()}
    assert after == before
    again.observe(policy, "r", 0, 4, [finding(6.0, parameter="y")], now=4)  # same open alert
    assert len(again.alerts()) == 2
    again.observe(policy, "r", 0, 5, [finding(parameter="z")], now=5)
    assert max(a.id for a in again.alerts()) == max(before) + 1


def test_book_prunes_resolved_alerts_past_retention(tmp_path: Path) -> None:
    book = AlertBook(Store(str(tmp_path / "p.db")))
    policy = Policy("non_finite", "critical", for_checks=1, clear_checks=1)
    book.observe(policy, "r", 0, 1, [finding()], now=1)
    book.observe(policy, "r", 0, 2, [], now=2)
    assert book.prune(retention_seconds=10, now=5) == 0
    assert book.prune(retention_seconds=10, now=100) == 1
    assert book.alerts() == [] and AlertBook(Store(str(tmp_path / "p.db"))).alerts() == []


def test_console_line_is_readable() -> None:
    alert = Alert(
        1, "frozen_parameters", "error", "firing", "demo", 0, "blocks.1.mlp.fc.weight", 1500,
        0.0, 1e-12, "update ratio 0 for 3 checks", "keep fp32", 1.0, 1.0,
    )  # fmt: skip
    line = describe(alert)
    assert line.startswith("ALERT frozen_parameters [error]")
    assert "run=demo rank=0 step=1500 param=blocks.1.mlp.fc.weight: update ratio 0" in line
    lines: list[str] = []

    class Sink:
        def warning(self, msg: str) -> None:
            lines.append(msg)

        info = warning

    log = ConsoleLog(Sink())  # type: ignore[arg-type]
    log(alert)
    log(alert)  # an ack or update: not logged twice
    alert.state = "resolved"
    log(alert)
    assert len(lines) == 2 and lines[1].startswith("RESOLVED")


def test_book_first_step_keeps_the_onset_across_updates_and_restarts(tmp_path: Path) -> None:
    policy = Policy("non_finite", "critical", for_checks=0, clear_checks=3)
    store = Store(tmp_path / "a.db")
    book = AlertBook(store)
    for step in (40, 41, 45):
        book.observe(policy, "r", 0, step, [finding()], now=step)
    book.flush()
    store.close()
    [alert] = AlertBook(Store(tmp_path / "a.db")).alerts()
    assert (alert.first_step, alert.step) == (40, 45)
