"""/alerts/stream: numbered events, Last-Event-ID resume (exact while the change log reaches,
from the store after a restart), filters, keep-alives, and no change missed or repeated while
changes race the connection. A real uvicorn server over a Core built without sockets."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from gradwatch.client import sse
from gradwatch.collector.alert_log import CHANGE_LOG
from gradwatch.collector.api import create_app
from gradwatch.collector.book import AlertBook, Policy
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import Core, build_core
from gradwatch.collector.rules import build_rules
from gradwatch.collector.rules.base import Finding
from gradwatch.collector.store import Store
from tests.helpers.waiting import wait_until

NAN = Policy("non_finite", "critical", for_checks=0, clear_checks=1, cooldown_seconds=0)
HELD = Policy("frozen_parameters", "error", for_checks=2, clear_checks=1, cooldown_seconds=0)


def finding(parameter: str = "w") -> Finding:
    return Finding("non_finite", parameter, math.nan, 0.0, "NaN", "stop")


def raise_alert(core: Core, run: str, parameter: str = "w", step: int = 1) -> None:
    core.book.observe(NAN, run, 0, step, [finding(parameter)])


@contextmanager
def served(core: Core) -> Iterator[str]:
    """The API over ``core`` on a free loopback port, in a thread; stopped on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(core), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        core.stream.close()
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def core() -> Iterator[Core]:
    c = build_core(CollectorConfig(keepalive_seconds=0.2), build_rules(), persist=False)
    yield c
    c.close()


class Reader:
    """Reads one SSE connection in a thread: raw lines and parsed events."""

    def __init__(self, url: str, last_event_id: int | None = None, **params: Any) -> None:
        self.lines: list[str] = []
        self.events: list[sse.Event] = []
        headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        self._args = (url + "/alerts/stream", headers, params)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        wait_until(lambda: self.events, 30)  # connected: later changes reach it

    def _read(self) -> None:
        url, headers, params = self._args
        with httpx.stream("GET", url, headers=headers, params=params, timeout=60) as r:
            for event in sse.parse(self._lines(r)):
                self.events.append(event)
                if self._stop.is_set():
                    return

    def _lines(self, r: httpx.Response) -> Iterator[str]:
        for line in r.iter_lines():
            self.lines.append(line)
            yield line

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in list(self.events) if e.event == "alert" and e.data]

    def ids(self) -> list[int]:
        return [a["seq"] for a in self.alerts()]

    def close(self) -> None:
        self._stop.set()


def test_stream_events_carry_the_change_number_and_start_with_the_position(core: Core) -> None:
    raise_alert(core, "before")  # change 1, before the client connects: not sent
    with served(core) as url:
        reader = Reader(url)
        assert reader.lines[:2] == [": connected", "id: 1"]
        raise_alert(core, "after")
        [alert] = wait_until(reader.alerts)
        assert alert["run"] == "after" and alert["seq"] == 2
        i = reader.lines.index("event: alert")
        assert reader.lines[i + 1 : i + 3] == [
            f"data: {json.dumps(alert, separators=(',', ':'))}",
            "id: 2",
        ]
        assert core.book.ack(alert["id"]) is not None
        wait_until(lambda: len(reader.alerts()) == 2)
        assert reader.alerts()[1]["acked"] and reader.ids() == [2, 3]


def test_stream_resumes_after_last_event_id_with_every_change_in_order(core: Core) -> None:
    raise_alert(core, "a")  # 1
    raise_alert(core, "b")  # 2
    core.book.ack(1)  # 3
    core.book.observe(NAN, "a", 0, 2, [])  # 4: resolved
    with served(core) as url:
        reader = Reader(url, last_event_id=1)
        assert reader.events[0].id == "1" and reader.events[0].comments == ["connected"]
        wait_until(lambda: len(reader.ids()) == 3)
        raise_alert(core, "c")  # 5, live
        wait_until(lambda: len(reader.ids()) == 4)
        assert reader.ids() == [2, 3, 4, 5]
        states = [(a["run"], a["state"], a["acked"]) for a in reader.alerts()]
        assert states == [("b", "firing", False), ("a", "firing", True),
                          ("a", "resolved", True), ("c", "firing", False)]  # fmt: skip


def test_stream_misses_and_repeats_nothing_while_changes_race_reconnects(core: Core) -> None:
    """A client that reconnects repeatedly from its last id, while another thread makes changes
    as fast as it can, sees every change number exactly once, in order."""
    for i in range(50):
        raise_alert(core, "r", parameter=f"p{i}", step=i)
    with served(core) as url:

        def churn() -> None:
            for i in range(150):  # acks and fresh alerts, interleaved
                if i % 3:
                    raise_alert(core, "r2", parameter=f"q{i}", step=i)
                else:
                    core.book.ack(i // 3 + 1)

        producer = threading.Thread(target=churn)
        seen: list[int] = []
        last = 0
        producer.start()
        while producer.is_alive() or last < core.book.seq:  # reconnect after a few events
            reader, after = Reader(url, last_event_id=last), last
            wait_until(lambda: reader.ids() or after >= core.book.seq, 30)  # noqa: B023
            reader.close()
            got = reader.ids()
            seen += got
            last = got[-1] if got else last
        producer.join(30)
    assert core.book.seq > 200 and seen == list(range(1, core.book.seq + 1))


def test_stream_filters_and_keepalives_move_the_position(core: Core) -> None:
    with served(core) as url:
        reader = Reader(url, run="mine", severity="critical")
        raise_alert(core, "other")  # 1, filtered out
        raise_alert(core, "mine")  # 2
        wait_until(lambda: reader.ids() == [2])
        raise_alert(core, "other", parameter="x")  # 3 and 4 (w resolves), filtered out
        assert core.book.seq == 4
        keepalive = wait_until(
            lambda: next((e for e in reader.events if e.comments == ["keep-alive"]
                          and e.id == "4"), None)
        )  # fmt: skip
        assert keepalive.event is None and keepalive.data is None
        assert reader.ids() == [2]
        bad = httpx.get(url + "/alerts/stream", params={"state": "dozing"})
        assert bad.status_code == 422 and "state" in bad.text
        bad = httpx.get(url + "/alerts/stream", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 422 and "last-event-id" in bad.text


def test_stream_id_ahead_of_the_book_replays_all_of_it(core: Core) -> None:
    """A collector whose history was reset (new database): an old client's id is ahead of it."""
    raise_alert(core, "a")
    raise_alert(core, "b")
    with served(core) as url:
        reader = Reader(url, last_event_id=99)
        assert reader.events[0].id == "0"
        wait_until(lambda: reader.ids() == [1, 2])


def test_stream_sequence_survives_restarts_and_replays_from_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    book = AlertBook(Store(path))
    book.observe(NAN, "r", 0, 1, [finding("a")], now=1)  # 1: a firing
    book.observe(HELD, "r", 0, 1, [finding("b")], now=1)  # 2: b pending
    book.observe(HELD, "r", 0, 2, [], now=2)  # 3: b never fired: dropped, number kept
    assert book.alerts()[0].seq == 1 and book.seq == 3
    book.store.close()  # type: ignore[union-attr]

    again = AlertBook(Store(path))
    assert again.seq == 3 and again.changes_since(3) == []
    again.ack(1)  # 4
    assert [a.seq for a in again.changes_since(3)] == [4]  # from the change log
    assert [(a.seq, a.acked) for a in again.changes_since(0)] == [(4, True)]  # latest states
    again.store.close()  # type: ignore[union-attr]
    assert AlertBook(Store(path)).seq == 4


def test_stream_change_log_falls_back_to_latest_states_when_outrun() -> None:
    book = AlertBook()
    for i in range(CHANGE_LOG + 10):
        book.observe(NAN, f"r{i}", 0, 1, [finding()], now=i)  # one alert per run: none clears
    assert [a.seq for a in book.changes_since(20)] == list(range(21, CHANGE_LOG + 11))
    changes = book.changes_since(5)  # before the log: one latest state per alert
    assert [a.seq for a in changes] == list(range(6, CHANGE_LOG + 11))
    assert changes[0] is not book.changes_since(5)[0]  # copies, not the book's own records
    assert dataclasses.asdict(changes[0]) == dataclasses.asdict(book.get(6))  # type: ignore[arg-type]
