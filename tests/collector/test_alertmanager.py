"""Alertmanager pusher: payload shape, resend, resolve, failure handling, real HTTP."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gradwatch.collector.alert import Alert
from gradwatch.collector.alertmanager import AlertmanagerPusher
from gradwatch.collector.config import CollectorConfig
from tests.helpers.waiting import wait_until


def config(**kw: Any) -> CollectorConfig:
    """The collector's config, with the receiver and resend interval these tests use."""
    base = {
        "alertmanager_url": "http://am.invalid:9093/",
        "alertmanager_resend_seconds": 0.2,
        "public_url": "http://gradwatch:8000/",
    }
    return CollectorConfig(**{**base, **kw})


@dataclass
class Book:
    items: list[Alert] = field(default_factory=list)
    listeners: list[Callable[[Alert], None]] = field(default_factory=list)

    def subscribe(self, callback: Callable[[Alert], None]) -> None:
        self.listeners.append(callback)

    def alerts(self, state: str | None = None) -> list[Alert]:
        return [a for a in self.items if state is None or a.state == state]

    def change(self, alert: Alert) -> None:
        for listener in self.listeners:
            listener(alert)


@dataclass
class Recorder:
    """A ``post`` function that records bodies and fails while ``fail`` is set."""

    bodies: list[list[dict[str, Any]]] = field(default_factory=list)
    """Bodies that got through."""
    attempts: list[list[dict[str, Any]]] = field(default_factory=list)
    """Every body posted, failed or not."""
    fail: bool = False

    def __call__(self, url: str, body: bytes) -> None:
        assert url == "http://am.invalid:9093/api/v2/alerts"
        self.attempts.append(json.loads(body))
        if self.fail:
            raise OSError("connection refused")
        self.bodies.append(json.loads(body))

    def sent(self) -> list[dict[str, Any]]:
        return [a for body in self.bodies for a in body]


def alert(state: str = "firing", **kw: Any) -> Alert:
    base = Alert(7, "nonfinite_grad", "critical", "firing", "run-a", 3, "h.0.attn.weight", 20,
                 float("nan"), 0.0, "NaN in the gradient of h.0.attn.weight at step 20",
                 "skip the batch or lower the LR", 1000.0, 1000.0)  # fmt: skip
    return replace(base, state=state, **kw)  # type: ignore[arg-type]


@pytest.fixture
def pusher() -> Iterator[tuple[AlertmanagerPusher, Book, Recorder]]:
    book, rec = Book(), Recorder()
    p = AlertmanagerPusher(config(), book, post=rec, clock=lambda: 2000.0)
    p.start()
    yield p, book, rec
    p.stop()


def test_alertmanager_payload_carries_labels_annotations_and_link(pusher: Any) -> None:
    p, book, rec = pusher
    book.change(alert("pending"))
    book.change(alert())
    wait_until(lambda: rec.sent())
    sent = rec.sent()[0]
    assert sent["labels"] == {
        "alertname": "nonfinite_grad",
        "severity": "critical",
        "run": "run-a",
        "rank": "3",
        "parameter": "h.0.attn.weight",
        "job": "gradwatch",
    }
    notes = sent["annotations"]
    assert notes["link"] == sent["generatorURL"] == "http://gradwatch:8000/alerts/7"
    assert notes["step"] == "20" and notes["value"] == "nan" and notes["threshold"] == "0"
    assert notes["action"].startswith("skip") and "NaN" in notes["description"]
    assert sent["startsAt"] == "1970-01-01T00:16:40.000+00:00"
    assert sent["endsAt"] == "1970-01-01T00:33:20.800+00:00"  # now + 4 x 0.2 s
    assert all(s["labels"]["alertname"] == "nonfinite_grad" for s in rec.sent())


def test_alertmanager_resends_firing_and_sends_resolved_once(pusher: Any) -> None:
    p, book, rec = pusher
    book.change(alert())
    book.change(alert(id=9, rule="loss_spike"))  # keeps firing: its resends mark the cycles
    wait_until(lambda: len(rec.bodies) >= 3)  # the changes, then resends every 0.2 s
    book.change(alert("resolved", resolved_at=1500.0))
    wait_until(lambda: any(a["endsAt"].startswith("1970-01-01T00:25:00") for a in rec.sent()))
    n = len(rec.bodies)
    wait_until(lambda: len(rec.bodies) >= n + 2)  # two more resend cycles of alert 9
    later = [a for body in rec.bodies[n:] for a in body]
    assert {a["labels"]["alertname"] for a in later} == {"loss_spike"}, "resolved re-sent"
    assert p.counts["failure"] == 0 and p.counts["success"] >= 4


def test_alertmanager_resends_alerts_already_firing_at_start() -> None:
    book, rec = Book([alert(), alert("resolved", id=8, rule="loss_spike")]), Recorder()
    p = AlertmanagerPusher(config(), book, post=rec)
    p.start()
    try:
        wait_until(lambda: rec.sent())
        assert [a["labels"]["alertname"] for a in rec.bodies[0]] == ["nonfinite_grad"]
    finally:
        p.stop()


def test_alertmanager_failure_is_counted_logged_once_and_retried(
    pusher: Any, caplog: pytest.LogCaptureFixture
) -> None:
    p, book, rec = pusher
    rec.fail = True
    with caplog.at_level(logging.INFO, logger="gradwatch.collector.alertmanager"):
        book.change(alert())
        wait_until(lambda: p.counts["failure"] >= 3)
        book.change(alert("resolved", resolved_at=1500.0))
        # The resolve was tried (and failed) before the receiver comes back.
        resolve_end = "1970-01-01T00:25:00"
        wait_until(
            lambda: any(a["endsAt"].startswith(resolve_end) for b in rec.attempts for a in b)
        )
        rec.fail = False
        # The recovery line is logged just after the POST returns: wait for both.
        wait_until(lambda: rec.sent() and p.counts["success"] > 0 and len(caplog.records) >= 2)
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert rec.sent()[0]["endsAt"].startswith("1970-01-01T00:25:00")  # the resolve got through


def test_alertmanager_notify_never_blocks_and_counts_drops(monkeypatch: Any) -> None:
    monkeypatch.setattr("gradwatch.collector.alertmanager.QUEUE_SIZE", 2)
    p = AlertmanagerPusher(config(), Book(), post=Recorder())  # not started: nothing drains
    for _ in range(5):
        p.notify(alert())  # a blocking put would hang here; the full queue must drop instead
    assert p.counts["dropped"] == 3


def test_alertmanager_disabled_without_url_does_nothing() -> None:
    book = Book()
    p = AlertmanagerPusher(config(alertmanager_url=None), book)
    p.start()
    p.stop()
    assert not book.listeners


def test_alertmanager_posts_json_over_real_http() -> None:
    received: list[tuple[str, str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    book = Book()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    p = AlertmanagerPusher(config(alertmanager_url=url, alertmanager_resend_seconds=60), book)
    p.start()
    try:
        book.change(alert())
        wait_until(lambda: received)
        path, ctype, body = received[0]
        assert (path, ctype) == ("/api/v2/alerts", "application/json")
        assert body[0]["labels"]["run"] == "run-a" and p.counts["success"] == 1
    finally:
        p.stop()
        server.shutdown()
        server.server_close()
