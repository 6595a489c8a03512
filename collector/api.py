"""The HTTP API: alerts, runs, health and /metrics, over a :class:`Core`."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.sse import EventSourceResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BeforeValidator

from gradwatch.keys import read_token

from .alert import Alert, AlertStateName, Severity
from .auth import protect
from .core import Core
from .pages import add_pages
from .schemas import AlertList, Health, Problem, Ready, RunDetail, RunList
from .series import SERIES, RankHistory, SeriesMetric
from .stream import AlertFilter
from .views import LocalViews, RunViews, WorkerGone

NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": Problem, "description": "Not found"}
}
WORKER_GONE: dict[int | str, dict[str, object]] = {
    503: {"model": Problem, "description": "With --workers: a worker process did not answer"}
}


def parse_since(value: str) -> float:
    """Unix seconds or ISO-8601 (naive means UTC) → unix seconds; ValueError otherwise."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"since must be unix seconds or ISO-8601, got {value!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"since must be a finite number, got {value!r}")
    return seconds


def _since(value: object) -> object:
    """``since`` as unix seconds; a ValueError becomes the usual 422 body."""
    return parse_since(value) if isinstance(value, str) else value


def create_app(
    core: Core,
    ingest_alive: Callable[[], bool] = lambda: True,
    views: RunViews | None = None,
) -> FastAPI:
    """The HTTP API over ``core`` (built by :func:`~gradwatch.collector.core.build_core`);
    runs and metrics from ``views`` (default: the core's own fleet)."""
    book, store, config = core.book, core.store, core.config
    view: RunViews = LocalViews(core) if views is None else views
    app = FastAPI(
        title="gradwatch collector",
        version="1",
        description="Training-health alerts for PyTorch runs: list, inspect, acknowledge, "
        "stream; run state; Prometheus metrics. With `--api-token-file`, mutating calls (and "
        "with `--api-token-reads` every call but /metrics, /healthz, /readyz) need "
        "`Authorization: Bearer TOKEN`.",
    )
    token = read_token(config.api_token_file) if config.api_token_file else None
    protect(app, token, config.api_token_reads)

    @app.exception_handler(WorkerGone)
    def worker_gone(request: Request, exc: WorkerGone) -> Response:
        body = Problem(detail=str(exc)).model_dump_json()
        return Response(body, 503, media_type="application/json")

    def found(alert: Alert | None, alert_id: int) -> Alert:
        if alert is None:
            raise HTTPException(404, f"no alert with id {alert_id}")
        return alert

    @app.get("/alerts", response_model=AlertList, summary="List alerts, newest first")
    def list_alerts(
        run: str | None = None,
        rank: Annotated[
            int | None, Query(ge=0, description="Alerts covering this rank (any of ``ranks``)")
        ] = None,
        rule: str | None = None,
        severity: Severity | None = None,
        state: AlertStateName | None = None,
        since: Annotated[
            float | None,
            BeforeValidator(_since),
            Query(description="Updated at or after: unix seconds (or an ISO-8601 time)"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> AlertList:
        """Filter by run, rank, rule, severity, state and update time; page with limit/offset."""
        matches = book.alerts(state, run=run, rank=rank, rule=rule, severity=severity, since=since)
        page = matches[offset : offset + limit]
        return AlertList(alerts=page, total=len(matches), limit=limit, offset=offset)

    @app.get(
        "/alerts/stream",
        summary="Server-Sent Events of alert changes, resumable",
        response_class=Response,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    def alert_stream(
        last_event_id: Annotated[
            int | None,
            Header(ge=0, description="Resume: replay every change numbered above this first"),
        ] = None,
        run: str | None = None,
        rank: Annotated[int | None, Query(ge=0)] = None,
        rule: str | None = None,
        severity: Severity | None = None,
        state: AlertStateName | None = None,
    ) -> EventSourceResponse:
        """``event: alert``, ``id:`` the change's sequence number (``seq``) and the alert JSON
        on every state change or ack, filtered like ``GET /alerts``. The first message is a
        ``: connected`` comment whose id is the stream's position; a ``: keep-alive`` comment
        with the position follows ``keepalive_seconds`` of quiet. Ends when the collector shuts
        down; reconnect with ``Last-Event-ID`` to resume (across restarts too)."""
        # Returned rather than yielded from the route: FastAPI's generator-route producer logs
        # an "Exception in ASGI application" when a client leaves mid-burst (fastapi 0.165);
        # the stream sends its own keep-alives.
        events = core.stream.events(last_event_id, AlertFilter(run, rank, rule, severity, state))
        return EventSourceResponse(events, headers={"X-Accel-Buffering": "no"})

    @app.get("/alerts/{alert_id}", response_model=Alert, summary="One alert", responses=NOT_FOUND)
    def get_alert(alert_id: int) -> Alert:
        """The alert with its flight recorder (``history``); 404 if unknown."""
        return found(book.get(alert_id), alert_id)

    @app.get(
        "/alerts/{alert_id}/recording",
        summary="The alert's flight recording",
        response_class=FileResponse,
        responses={404: {"model": Problem, "description": "No such alert, or no recording"}},
    )
    def alert_recording(alert_id: int) -> FileResponse:
        """The frames of every rank of the alert's run around its onset (gzip of msgpack:
        ``gradwatch recording show FILE``, ``gradwatch replay FILE``); 404 until written
        (``recording_after_seconds`` after the alert fired)."""
        path = core.recorder.path_of(alert_id)
        if path is None:
            raise HTTPException(404, f"no recording of alert {alert_id}")
        return FileResponse(
            path, media_type="application/octet-stream", filename=f"alert-{alert_id}.gwrec"
        )

    @app.post(
        "/alerts/{alert_id}/ack",
        response_model=Alert,
        summary="Acknowledge an alert",
        responses=NOT_FOUND,
    )
    def ack_alert(alert_id: int) -> Alert:
        """Mark the alert acknowledged (it keeps its state); 404 if unknown."""
        return found(book.ack(alert_id), alert_id)

    @app.get("/runs", response_model=RunList, summary="Runs and their ranks", responses=WORKER_GONE)
    def runs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> RunList:
        """Runs seen (live in memory, or remembered in the database), most recently seen first;
        page with limit/offset. Session ids only for callers with the API token."""
        sessions = bool(getattr(request.state, "authenticated", False))
        return view.runs(limit, offset, sessions)

    @app.get(
        "/runs/{run}",
        response_model=RunDetail,
        summary="One run as a job",
        responses=NOT_FOUND | WORKER_GONE,
    )
    def run(run: str) -> RunDetail:
        """The job: world size and the ranks seen, missing, live, stalled, silent, crashed and
        terminated; per rank its status, phase, how it ended, step, loss, LR, metrics and the
        worst parameters by each measure."""
        detail = view.run(run)
        if detail is None:
            raise HTTPException(404, f"no live run named {run!r}")
        return detail

    @app.get(
        "/runs/{run}/series",
        response_model=RankHistory,
        summary="History of one rank's metrics",
        responses=NOT_FOUND | WORKER_GONE,
    )
    def series(
        run: str,
        metric: Annotated[
            list[SeriesMetric] | None, Query(description="Repeatable (default: every metric)")
        ] = None,
        rank: Annotated[int | None, Query(ge=0, description="Default: the run's lowest")] = None,
    ) -> RankHistory:
        """Per metric, ``steps`` and ``values`` (null: NaN/Inf), downsampled to a fixed size:
        each bucket's minimum and maximum at their steps, and the exact samples where alerts
        opened. Empty before the rank's first statistics; 404 if the run or rank is not live."""
        history = view.series(run, rank, list(metric or SERIES))
        if isinstance(history, str):
            raise HTTPException(404, history)
        return history

    @app.get(
        "/healthz",
        response_model=Health,
        summary="Liveness",
        responses={503: {"model": Health, "description": "The ingest thread died"}},
    )
    def healthz() -> Response | Health:
        """200 while the process and its ingest thread are alive, 503 otherwise."""
        alive = ingest_alive() and view.alive()
        body = Health(status="ok" if alive else "ingest thread died", ingest_alive=alive)
        if not alive:
            return Response(body.model_dump_json(), 503, media_type="application/json")
        return body

    @app.get(
        "/readyz",
        response_model=Ready,
        summary="Readiness",
        responses={503: {"model": Ready, "description": "Not ready; `problems` says why"}},
    )
    def readyz() -> Response | Ready:
        """200 when the ZeroMQ socket is bound (ingest running) and every alert is saved in a
        writable database; 503 with the reasons otherwise."""
        bound = ingest_alive()
        problems = ([] if bound else ["the ingest thread is not running"]) + view.problems()
        writable = store is None or (store.error is None and not book.unsaved and store.writable())
        body = Ready(ready=not problems, zmq_bound=bound, db_writable=writable, problems=problems)
        if not body.ready:
            return Response(body.model_dump_json(), 503, media_type="application/json")
        return body

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={**WORKER_GONE, 200: {"content": {"text/plain": {}}}},
    )
    def metrics() -> Response:
        """Prometheus text exposition of runs, parameters, alerts and ingest health."""
        return Response(view.metrics(), media_type=CONTENT_TYPE_LATEST)

    add_pages(app)  # /, /static and /docs/{name}: not in the schema
    return app
