"""Push gradwatch alerts to Alertmanager's v2 API, the way Prometheus does.

The alert book calls :meth:`AlertmanagerPusher.notify` on its ingest thread; that only queues.
A daemon thread posts changes at once, re-sends every firing alert each
``alertmanager_resend_seconds`` (``endsAt`` = now + 4 intervals, so Alertmanager resolves them by
itself if the collector dies) and sends resolved ones with ``endsAt`` = the resolve time.
Each POST is retried with backoff (alertmanager_http.py); a batch that still fails is counted,
logged once until the next success, and retried next cycle.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import urlencode

from .alert import Alert
from .alertmanager_http import HttpPost
from .config import CollectorConfig
from .rank_ranges import compact_ranks

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
"""Alert changes waiting to be sent; beyond this they are dropped and counted."""
BATCH = 500
"""Alerts per POST."""
ENDS_AFTER_RESENDS = 4
"""A firing alert's ``endsAt`` lies this many resend intervals ahead."""

Fingerprint = tuple[str, str, str]
Post = Callable[[str, bytes], None]


class AlertBookLike(Protocol):
    def subscribe(self, callback: Callable[[Alert], None]) -> None: ...
    def alerts(self, state: str | None = None) -> list[Alert]: ...


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds")


DASHBOARD_UID = "gradwatch-run"
"""The provisioned run dashboard (grafana/dashboards/run.json), with variables run and rank."""


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


class AlertmanagerPusher:
    """Forwards firing and resolved alerts of ``book`` to ``config.alertmanager_url``."""

    def __init__(
        self,
        config: CollectorConfig,
        book: AlertBookLike,
        *,
        post: Post | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``post(url, body)`` sends one request (default: an :class:`HttpPost` for the config,
        made by ``start``); ``clock`` stamps ``endsAt`` (tests fix both)."""
        self.config, self.book = config, book
        self.endpoint = (config.alertmanager_url or "").rstrip("/") + "/api/v2/alerts"
        self.counts: dict[str, int] = {"success": 0, "failure": 0, "dropped": 0}
        self._queue: queue.Queue[Alert | None] = queue.Queue(QUEUE_SIZE)
        self._firing: dict[Fingerprint, Alert] = {}
        self._unsent: dict[Fingerprint, Alert] = {}
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.transport: HttpPost | None = None
        self._post, self._clock = post, clock

    @property
    def enabled(self) -> bool:
        return bool(self.config.alertmanager_url)

    def start(self) -> None:
        """Subscribe to the book and start the sender thread (no-op without a URL)."""
        if not self.enabled or self._thread is not None:
            return
        for alert in self.book.alerts("firing"):  # survive a collector restart
            self._firing.setdefault(alert.fingerprint, alert)
        if self._post is None:
            self._post = self.transport = HttpPost(self.config, self._stop)
        self.book.subscribe(self.notify)
        self._thread = threading.Thread(target=self._run, name="alertmanager", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Send what is queued (one try, no retries), then end the thread."""
        if self._thread is not None:
            self._stop.set()
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join(timeout or self.config.alertmanager_timeout_seconds + 1)
            self._thread = None
        if self.transport is not None:
            self.transport.close()

    def notify(self, alert: Alert) -> None:
        """Book listener: queue the change; never blocks the ingest thread."""
        if alert.state == "pending":
            return
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.counts["dropped"] += 1

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        interval = max(self.config.alertmanager_resend_seconds, 0.1)
        next_resend = time.monotonic()  # send the firing set once at start
        while True:
            changed: dict[Fingerprint, Alert] = {}
            timeout = max(0.0, next_resend - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
                while item is not None:
                    changed[item.fingerprint] = item
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            stopping = self._stop.is_set()
            batch = dict(self._unsent)
            for fp, alert in changed.items():
                if alert.state == "firing":
                    self._firing[fp] = batch[fp] = alert
                elif self._firing.pop(fp, None) is not None:  # resolve only what was sent
                    batch[fp] = alert
            if time.monotonic() >= next_resend:
                batch = {**self._firing, **batch}
                next_resend = time.monotonic() + interval
            if batch:
                self._send(list(batch.values()))
            if stopping:
                return

    def _send(self, alerts: Sequence[Alert]) -> None:
        """POST ``alerts`` in batches; keep the ones that failed for the next cycle."""
        self._unsent = {}
        for i in range(0, len(alerts), BATCH):
            chunk = alerts[i : i + BATCH]
            body = json.dumps([self.payload(a) for a in chunk]).encode()
            try:
                assert self._post is not None  # set by start()
                self._post(self.endpoint, body)
            except Exception as exc:  # network and HTTP errors alike: count, log once, retry
                self.counts["failure"] += len(chunk)
                self._unsent.update((a.fingerprint, a) for a in chunk if a.state == "resolved")
                if not self._failing:
                    log.warning("alertmanager %s unreachable (%s); retrying", self.endpoint, exc)
                self._failing = True
                continue
            self.counts["success"] += len(chunk)
            if self._failing:
                log.info("alertmanager %s reachable again", self.endpoint)
            self._failing = False

    def _dashboard_url(self, alert: Alert) -> str:
        """The run dashboard at the alert's run and rank, from an hour before it started."""
        grafana = getattr(self.config, "grafana_url", "").rstrip("/")
        if not grafana or not alert.run:
            return ""
        query = urlencode(
            {
                "var-run": alert.run,
                "var-rank": alert.rank,
                "from": int((alert.started_at - 3600) * 1000),
                "to": "now",
            }
        )
        return f"{grafana}/d/{DASHBOARD_UID}?{query}"

    def payload(self, alert: Alert) -> dict[str, Any]:
        """One element of the ``POST /api/v2/alerts`` body.

        Labels (identity, routing): ``alertname`` (the rule), ``severity``, ``run``,
        ``parameter`` (when there is one), ``job="gradwatch"``: one alert per job and cause, as
        the collector keeps them. Annotations (text, links): ``rank`` (the origin or culprit:
        an annotation, so that an origin settling after the alert opened does not make a second
        Alertmanager alert), ``ranks`` (every rank the alert covers, compact: ``0-39``),
        ``summary``, ``description`` (at most 1,000 characters), ``action``, ``value``,
        ``threshold``, ``step``, ``first_step``, ``link`` (the alert in the collector) and
        ``runbook_url`` (the rule's section of docs/rules.md), both under ``public_url``, and
        ``dashboard_url`` when ``grafana_url`` is set.
        deploy/alertmanager/templates/gradwatch.tmpl reads these names.
        """
        base = self.config.public_url.rstrip("/")
        link = f"{base}/alerts/{alert.id}"
        ranks = compact_ranks(alert.covers)
        where = f"ranks {ranks} (origin rank {alert.rank})" if len(alert.covers) > 1 else ""
        where = where or f"rank {alert.rank}"
        message = alert.message if len(alert.message) <= 1000 else alert.message[:999] + "…"
        labels: dict[str, str] = {
            "alertname": alert.rule,
            "severity": alert.severity,
            "run": alert.run,
            "job": "gradwatch",
        }
        if alert.parameter:
            labels["parameter"] = alert.parameter
        annotations: Mapping[str, str] = {
            "summary": f"{alert.rule} on {alert.run} {where}"
            + (f" ({alert.parameter})" if alert.parameter else ""),
            "description": message,
            "action": alert.action,
            "value": _num(alert.value),
            "threshold": _num(alert.threshold),
            "step": str(alert.step),
            "first_step": str(alert.first_step) if alert.first_step >= 0 else "",
            "rank": str(alert.rank),
            "ranks": ranks,
            "link": link,
            "runbook_url": f"{base}/docs/rules.md#{alert.rule}",
            "dashboard_url": self._dashboard_url(alert),
        }
        if alert.state == "resolved":
            ends = alert.resolved_at or alert.updated_at
        else:
            ends = self._clock() + ENDS_AFTER_RESENDS * self.config.alertmanager_resend_seconds
        return {
            "labels": labels,
            "annotations": {k: v for k, v in annotations.items() if v},
            "startsAt": _rfc3339(alert.started_at),
            "endsAt": _rfc3339(ends),
            "generatorURL": link,
        }
