"""gradwatch.client against a live collector: every call, on the API's own models; the token;
errors; a stream that resumes across a collector restart; and an import that stays light."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from gradwatch.client import (
    Alert,
    AlertList,
    ApiError,
    Client,
    ClientConfig,
    RankSummary,
    RunDetail,
    RunList,
    Unreachable,
    sse,
)
from tests.helpers.live import raise_nan
from tests.helpers.processes import CollectorProcess
from tests.helpers.waiting import free_port, wait_until


def test_client_lists_filters_gets_and_acks_alerts(collector_process: CollectorProcess) -> None:
    first, second = raise_nan(collector_process, "a"), raise_nan(collector_process, "b")
    with Client(collector_process.http) as gw:
        page = gw.alerts()
        assert isinstance(page, AlertList) and page.total == 2
        assert all(isinstance(a, Alert) for a in page.alerts)
        assert [a.run for a in page.alerts] == ["b", "a"]  # newest first
        assert [a.id for a in gw.alerts(run="a").alerts] == [first["id"]]
        assert gw.alerts(state="resolved", rank=0).alerts == []
        assert gw.alerts(limit=1, offset=1).alerts[0].id == first["id"]

        alert = gw.alert(second["id"])
        assert alert == page.alerts[0] and alert.rule == "non_finite" and not alert.acked
        assert json.loads(alert.to_json()) == second  # the client parsed what the API served

        acked = gw.ack(second["id"])
        assert acked.acked and acked.seq > alert.seq and gw.alert(second["id"]).acked

        with pytest.raises(ApiError) as missing:
            gw.alert(999)
        assert missing.value.status == 404 and missing.value.detail == "no alert with id 999"
        with pytest.raises(ApiError) as bad:
            gw.alerts(state="dozing")
        assert bad.value.status == 422 and "query.state: Input should be" in bad.value.detail


def test_client_runs_and_one_run(collector_process: CollectorProcess) -> None:
    raise_nan(collector_process, "r1")
    with Client(collector_process.http, token="harmless-before-auth") as gw:
        runs = gw.runs()
        assert isinstance(runs, RunList) and [r.run for r in runs.runs] == ["r1"]
        [rank] = runs.runs[0].ranks
        assert isinstance(rank, RankSummary) and rank.last_step == 2 and rank.firing == 1
        detail = gw.run("r1")
        assert isinstance(detail, RunDetail) and detail.ranks[0].step == 2
        with pytest.raises(ApiError) as missing:
            gw.run("no such run")
        assert missing.value.status == 404 and "no such run" in missing.value.detail


def test_client_reports_an_unreachable_collector() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        Client(url) as gw,
        pytest.raises(Unreachable, match=f"cannot reach the collector at {url}"),
    ):
        gw.runs()
    with Client(url) as gw, pytest.raises(Unreachable):
        next(gw.stream(reconnect=False))


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str | None]]]:
    """A real HTTP server answering ``GET /runs`` and recording Authorization headers."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            body = b'{"runs": [], "total": 0, "limit": 100, "offset": 0}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_client_sends_the_api_token(recorder: tuple[str, list[str | None]], tmp_path: Path) -> None:
    url, seen = recorder
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    for client in (
        Client(url),
        Client(url, token="s3cret"),
        Client.from_config(ClientConfig(url=url, token_file=str(token_file))),
        Client.from_config(ClientConfig(url=url, token="flag", token_file=str(token_file))),
    ):
        with client:
            client.runs()
    assert seen == [None, "Bearer s3cret", "Bearer from-file", "Bearer flag"]


def test_client_stream_resumes_across_a_collector_restart(tmp_path: Path) -> None:
    """Changes made while the collector restarts, before the client is back, all arrive, once,
    in order: the stream resumes from the last change number it received."""
    proc = CollectorProcess(tmp_path).start()
    gw, other = Client(proc.http), Client(proc.http)
    positions: list[int] = []
    got: list[Alert] = []
    failed: list[BaseException] = []

    def produce() -> None:
        try:
            wait_until(lambda: positions)
            raise_nan(proc, "before")
            wait_until(lambda: got)
            proc.restart()
            raise_nan(proc, "after")
            other.ack(got[0].id)
        except BaseException as exc:
            failed.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    try:
        producer.start()
        for alert in gw.stream(on_connect=positions.append):
            got.append(alert)
            if len(got) == 3 or failed:
                break
        producer.join(60)
    finally:
        proc.stop()
        gw.close()
        other.close()
    assert not failed, failed
    assert [(a.seq, a.run, a.state, a.acked) for a in got] == [
        (1, "before", "firing", False),
        (2, "after", "firing", False),
        (3, "before", "firing", True),
    ]
    assert positions == [0, 1]  # connected at the start, then resumed after change 1


def test_client_sse_parser_follows_the_spec() -> None:
    lines = [": connected", "id: 4", "", "event: alert", "data: {\"a\":", "data:1}", "id: 5",
             "retry: 1000", "", "id: 6\0", "data", "", "", ": keep-alive", ""]  # fmt: skip
    events = list(sse.parse(lines))
    assert [(e.event, e.data, e.id, e.comments) for e in events] == [
        (None, None, "4", ["connected"]),
        ("alert", '{"a":\n1}', "5", []),
        (None, "", None, []),  # an id with NUL is ignored; a bare "data" field is empty data
        (None, None, None, ["keep-alive"]),
    ]
    assert events[1].retry == 1000


def test_client_import_loads_no_server_side_or_torch() -> None:
    code = (
        "import sys, gradwatch.client, gradwatch.cli.commands\n"
        "gradwatch.cli.commands.parser()\n"
        "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'zmq', 'torch', 'numpy',"
        " 'prometheus_client', 'yaml') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_client_models_are_the_apis(collector_process: CollectorProcess) -> None:
    """The client parses answers with the very classes the API serves (no copy to drift)."""
    import gradwatch.collector.alert as alert_module
    import gradwatch.collector.schemas as schemas

    assert Alert is alert_module.Alert and AlertList is schemas.AlertList
    raise_nan(collector_process, "m")
    served = httpx.get(collector_process.http + "/alerts").json()
    with Client(collector_process.http) as gw:
        assert gw.alerts().model_dump(mode="json") == served
