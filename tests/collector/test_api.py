"""The HTTP API in-process: every route, filters, paging and 4xx on bad input."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gradwatch.collector.alert import SEVERITIES, Alert
from gradwatch.collector.api import create_app, parse_since
from gradwatch.collector.run_record import RunRecord
from tests.helpers.fake_rank import FakeRank, Harness


@pytest.fixture
def world() -> Iterator[tuple[Harness, TestClient]]:
    h = Harness()
    r, other = FakeRank("demo", 0, frozen_by_design=["tok_emb.weight"]), FakeRank("other", 1)
    h.send(r.hello())
    h.send(other.hello())
    for step in range(1, 6):
        h.send(r.stats(step, full=True))
        h.send(other.stats(step))
    h.send(r.stats(6, grad={"blocks.1.mlp.fc.weight": math.nan}, full=True))
    h.send(other.stats(6, loss=math.inf))
    app = create_app(h.core)
    with TestClient(app) as client:
        yield h, client


def test_api_lists_alerts_newest_first_with_filters_and_paging(
    world: tuple[Harness, TestClient],
) -> None:
    _, client = world
    body = client.get("/alerts").json()
    assert body["total"] == 2 and body["limit"] == 100 and body["offset"] == 0
    first = body["alerts"][0]
    assert set(first) == {f.name for f in dataclasses.fields(Alert)}
    assert first["run"] == "other" and first["value"] == 1.0
    assert [a["run"] for a in client.get("/alerts", params={"run": "demo"}).json()["alerts"]] == [
        "demo"
    ]
    assert client.get("/alerts", params={"rank": 1}).json()["total"] == 1
    assert (
        client.get("/alerts", params={"rule": "non_finite", "severity": "critical"}).json()["total"]
        == 2
    )
    assert client.get("/alerts", params={"state": "resolved"}).json()["total"] == 0
    assert client.get("/alerts", params={"since": "2100-01-01T00:00:00Z"}).json()["total"] == 0
    assert client.get("/alerts", params={"since": "0"}).json()["total"] == 2
    page = client.get("/alerts", params={"limit": 1, "offset": 1}).json()
    assert page["total"] == 2 and [a["run"] for a in page["alerts"]] == ["demo"]


@pytest.mark.parametrize(
    "params",
    [{"severity": "loud"}, {"state": "open"}, {"limit": 0}, {"limit": 5000}, {"offset": -1},
     {"since": "yesterday"}, {"rank": -1}, {"limit": "x"}],
)  # fmt: skip
def test_api_rejects_bad_filters_with_4xx(
    world: tuple[Harness, TestClient], params: dict[str, object]
) -> None:
    _, client = world
    r = client.get("/alerts", params=params)
    assert 400 <= r.status_code < 500 and "detail" in r.json()


def test_api_get_and_ack_alert(world: tuple[Harness, TestClient]) -> None:
    _, client = world
    alert_id = client.get("/alerts").json()["alerts"][0]["id"]
    assert client.get(f"/alerts/{alert_id}").json()["acked"] is False
    assert client.post(f"/alerts/{alert_id}/ack").json()["acked"] is True
    assert client.get(f"/alerts/{alert_id}").json()["acked"] is True
    assert client.get("/alerts/999").status_code == 404
    assert client.post("/alerts/999/ack").status_code == 404
    assert client.get("/alerts/abc").status_code == 422


def test_api_runs_and_run_detail(world: tuple[Harness, TestClient]) -> None:
    _, client = world
    runs = {r["run"]: r for r in client.get("/runs").json()["runs"]}
    assert set(runs) == {"demo", "other"}
    [rank] = runs["demo"]["ranks"]
    assert rank["host"] == "testhost" and rank["last_step"] == 6 and rank["firing"] == 1
    assert rank["frames"] == 7 and rank["ended"] is False
    detail = client.get("/runs/demo").json()
    [r0] = detail["ranks"]
    assert r0["step"] == 6 and r0["loss"] == 2.0 and r0["lr"] == [1e-3]
    assert r0["worst"]["non_finite"] == ["blocks.1.mlp.fc.weight"]
    assert r0["worst"]["frozen_by_design"] == ["tok_emb.weight"]
    assert len(r0["worst"]["by_grad_norm"]) == 5
    assert r0["worst"]["lowest_update_ratio"][0]["value"] == pytest.approx(1e-3)
    assert client.get("/runs/other").json()["ranks"][0]["loss"] is None  # inf is not JSON
    assert client.get("/runs/nope").status_code == 404


def test_api_health_ready_docs_and_metrics(world: tuple[Harness, TestClient]) -> None:
    _, client = world
    assert client.get("/healthz").json() == {"status": "ok", "ingest_alive": True}
    assert client.get("/readyz").json()["ready"] is True
    schema = client.get("/openapi.json").json()
    for path, methods in schema["paths"].items():
        for op in methods.values():
            assert op.get("summary") and op.get("description"), path
    metrics = client.get("/metrics")
    assert metrics.status_code in (200, 503)
    if metrics.status_code == 200:
        assert metrics.headers["content-type"].startswith("text/plain")


def test_api_health_reports_a_dead_ingest_thread() -> None:
    h = Harness()
    app = create_app(h.core, ingest_alive=lambda: False)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 503
        assert client.get("/readyz").status_code == 503


def test_parse_since_accepts_unix_and_iso() -> None:
    assert parse_since("1700000000") == 1700000000.0
    assert parse_since("1970-01-01T00:01:00") == 60.0
    with pytest.raises(ValueError):
        parse_since("nan")


def test_api_serves_the_records_as_they_are(world: tuple[Harness, TestClient]) -> None:
    _, client = world
    [rank] = client.get("/runs").json()["runs"][0]["ranks"]
    assert set(rank) == {f.name for f in dataclasses.fields(RunRecord)} | {"firing", "live"}
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(schema["Alert"]["properties"]) == {f.name for f in dataclasses.fields(Alert)}
    assert schema["Alert"]["properties"]["severity"]["enum"] == list(SEVERITIES)
    assert "onset" in schema["Alert"]["properties"]["first_step"]["description"]


def test_api_run_detail_is_the_job_view_and_rank_filters_cover_every_rank() -> None:
    h = Harness(rules={"rank_stalled": {"seconds": 3.0}, "non_finite": {}})
    ranks = [FakeRank("job", r, world_size=4, replicated=True) for r in range(3)]  # 3 missing
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    h.step(ranks, 1, grad={"tok_emb.weight": math.nan})
    stack = ("/src/data.py:88 in Dataset.__getitem__",)
    for t in range(1, 6):
        h.now += 1.0
        h.send(ranks[0].heartbeat(1, "data", float(t), False, stack), dt=0.0)
        h.send(ranks[1].heartbeat(1, "eval", float(t), True), dt=0.0)
        h.tick()
    h.send(ranks[2].bye(1, "error", error_type="RuntimeError", error_kind="exception",
                        error_message="boom", stack=("/src/t.py:3 in f",)))  # fmt: skip
    with TestClient(create_app(h.core)) as client:
        job = client.get("/runs/job").json()
        assert (job["world_size"], job["seen"], job["missing"]) == (4, [0, 1, 2], [3])
        assert (job["live"], job["stalled"], job["crashed"]) == ([0, 1], [0], [2])
        r0, r1, r2 = job["ranks"]
        assert (r0["status"], r0["phase"], r0["declared"], r0["stack"]) == (
            "stalled",
            "data",
            False,
            list(stack),
        )
        assert r0["phase_seconds"] >= 5.0 and r0["pid"] == 100
        assert (r1["status"], r1["phase"], r1["declared"]) == ("running", "eval", True)
        assert r2["status"] == "crashed" and r2["exit"]["error_message"] == "boom"
        [nan] = client.get("/alerts", params={"rule": "non_finite"}).json()["alerts"]
        assert nan["ranks"] == [0, 1, 2]
        for rank in (0, 2):
            got = client.get("/alerts", params={"rule": "non_finite", "rank": rank}).json()
            assert [a["id"] for a in got["alerts"]] == [nan["id"]]
        assert client.get("/alerts", params={"rank": 3}).json()["total"] == 0
