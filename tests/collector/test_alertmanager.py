"""Alertmanager pusher: payload shape, resend, resolve, failure handling; its HTTP transport
against real local servers: retries with backoff, auth headers, TLS and mutual TLS."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gradwatch.collector.alert import Alert
from gradwatch.collector.alertmanager import AlertmanagerPusher
from gradwatch.collector.alertmanager_http import HttpPost
from gradwatch.collector.config import CollectorConfig
from gradwatch.settings import ConfigError
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
        "parameter": "h.0.attn.weight",
        "job": "gradwatch",
    }  # the rank is an annotation: an origin that changes keeps one Alertmanager alert
    notes = sent["annotations"]
    assert notes["rank"] == notes["ranks"] == "3"
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


# ---------------------------------------------------------------------- the HTTP transport


@dataclass
class Receiver:
    """A real Alertmanager stand-in: records each POST, answers from a script of statuses."""

    url: str
    requests: list[dict[str, Any]]
    statuses: list[int]
    """Statuses to answer, in order; 200 once they run out."""
    client_certs: list[Any] = field(default_factory=list)


@contextmanager
def receiver(
    statuses: list[int] | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    got = Receiver("", [], list(statuses or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            if tls is not None:
                got.client_certs.append(self.connection.getpeercert())  # type: ignore[attr-defined]
            status = got.statuses.pop(0) if got.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls is not None else "http"
    got.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()


def pushed(cfg: CollectorConfig, count: int = 1) -> tuple[AlertmanagerPusher, Book]:
    """A started pusher of ``cfg`` that was told about ``count`` firing alerts."""
    book = Book()
    p = AlertmanagerPusher(cfg, book)
    p.start()
    for i in range(count):
        book.change(alert(id=i + 1, parameter=f"p{i}"))
    return p, book


def test_alertmanager_retries_with_backoff_until_the_receiver_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with receiver([503, 502]) as am:
        cfg = config(alertmanager_url=am.url, alertmanager_resend_seconds=3600,
                     alertmanager_backoff_seconds=0.01)  # fmt: skip
        with caplog.at_level(logging.INFO, logger="gradwatch.collector.alertmanager"):
            p, _ = pushed(cfg)
            try:
                wait_until(lambda: p.counts["success"] == 1)
            finally:
                p.stop()
    assert len(am.requests) == 3 and p.transport is not None and p.transport.attempts == 3
    assert am.requests[0]["body"] == am.requests[2]["body"]  # the same batch, retried
    assert p.counts["failure"] == 0 and caplog.records == []  # recovered within the POST


def test_alertmanager_gives_up_a_rejected_batch_at_once() -> None:
    with receiver([400, 400]) as am:
        cfg = config(alertmanager_url=am.url, alertmanager_resend_seconds=3600,
                     alertmanager_backoff_seconds=0.01)  # fmt: skip
        p, _ = pushed(cfg)
        try:
            wait_until(lambda: p.counts["failure"] == 1)
        finally:
            p.stop()
    assert len(am.requests) == 1  # a 400 would fail again: no retry


def test_alertmanager_backoff_grows_with_jitter_and_stops_with_the_pusher() -> None:
    cfg = config(alertmanager_backoff_seconds=1.0, alertmanager_resend_seconds=6.0)
    post = HttpPost(cfg)
    try:
        for retry, base in enumerate([1.0, 2.0, 4.0, 6.0, 6.0]):  # doubling, capped at resend
            delays = [post.delay(retry) for _ in range(200)]
            assert base * 0.5 <= min(delays) < max(delays) <= base * 1.5
    finally:
        post.close()
    with receiver([503] * 10) as am:  # keeps failing; the next retry is an hour away
        cfg = config(alertmanager_url=am.url, alertmanager_backoff_seconds=3600,
                     alertmanager_resend_seconds=3600)  # fmt: skip
        p, _ = pushed(cfg)
        thread = p._thread
        wait_until(lambda: am.requests)
        p.stop(timeout=30)
        assert thread is not None and not thread.is_alive()  # stop cut the backoff short


def test_alertmanager_sends_bearer_or_basic_auth_read_at_each_post(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0k3n\n")
    with receiver() as am:
        p, book = pushed(config(alertmanager_url=am.url, alertmanager_resend_seconds=3600,
                                alertmanager_token_file=str(token)))  # fmt: skip
        try:
            wait_until(lambda: am.requests)
            token.write_text("rotated")
            book.change(alert(id=2, rule="loss_spike"))
            wait_until(lambda: len(am.requests) == 2)
        finally:
            p.stop()
        password = tmp_path / "password"
        password.write_text("pa:ss\n")
        p, _ = pushed(config(alertmanager_url=am.url, alertmanager_username="gw",
                             alertmanager_password_file=str(password)))  # fmt: skip
        try:
            wait_until(lambda: len(am.requests) == 3)
        finally:
            p.stop()
    auth = [r["headers"].get("Authorization") for r in am.requests]
    assert auth == ["Bearer t0k3n", "Bearer rotated",
                    "Basic " + base64.b64encode(b"gw:pa:ss").decode()]  # fmt: skip


def _self_signed(tmp_path: Path, name: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, made by the system's openssl."""
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_alertmanager_tls_verifies_the_server_and_presents_a_client_certificate(
    tmp_path: Path,
) -> None:
    server_cert, server_key = _self_signed(tmp_path, "alertmanager")
    client_cert, client_key = _self_signed(tmp_path, "gradwatch")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(server_cert, server_key)
    tls.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the receiver checks our certificate
    tls.load_verify_locations(client_cert)
    mtls = {"alertmanager_cert_file": client_cert, "alertmanager_key_file": client_key}
    with receiver(tls=tls) as am:
        base = {"alertmanager_url": am.url, "alertmanager_resend_seconds": 3600,
                "alertmanager_retries": 0}  # fmt: skip
        p, _ = pushed(config(**base, **mtls, alertmanager_ca_file=server_cert))
        try:
            wait_until(lambda: p.counts["success"] == 1)
        finally:
            p.stop()
        subject = dict(x[0] for x in am.client_certs[0]["subject"])
        assert subject == {"commonName": "gradwatch"}

        p, _ = pushed(config(**base, **mtls))  # the system's CAs do not know this server
        try:
            wait_until(lambda: p.counts["failure"] == 1)
        finally:
            p.stop()
        p, _ = pushed(config(**base, **mtls, alertmanager_insecure=True))
        try:
            wait_until(lambda: p.counts["success"] == 1)
        finally:
            p.stop()
    assert len(am.requests) == 2  # the unverified server never got the alert


@pytest.mark.parametrize(
    ("settings", "where", "says"),
    [
        ({"alertmanager_ca_file": "/no/such.pem"}, "alertmanager_ca_file", "cannot read"),
        ({"alertmanager_username": "gw"}, "alertmanager_username", "needs both"),
        ({"alertmanager_key_file": __file__}, "alertmanager_key_file", "needs alertmanager_cert"),
        ({"alertmanager_retries": -1}, "alertmanager_retries", "must not be negative"),
        ({"alertmanager_timeout_seconds": 0}, "alertmanager_timeout_seconds", "positive"),
        (
            {
                "alertmanager_username": "gw",
                "alertmanager_password_file": __file__,
                "alertmanager_token_file": __file__,
            },
            "alertmanager_token_file",
            "not both",
        ),  # fmt: skip
    ],
)
def test_alertmanager_transport_settings_are_checked(
    settings: dict[str, Any], where: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        CollectorConfig(**settings)
    assert info.value.where == where and says in info.value.message
