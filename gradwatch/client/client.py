"""The HTTP client: one method per route, answers parsed into the API's own models."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from gradwatch.collector.alert import ALERT_JSON, Alert
from gradwatch.collector.schemas import AlertList, RunDetail, RunList

from . import sse
from .config import DEFAULT_URL, ClientConfig

log = logging.getLogger(__name__)

STREAM_READ_TIMEOUT = 60.0
"""Longest silence on a stream before it counts as broken (the server pings every 15 s)."""
RECONNECT_SECONDS = (0.5, 10.0)
"""First and longest wait before reconnecting a stream; the wait doubles while it fails."""


class ClientError(Exception):
    """Any failure to get an answer from the collector."""


class Unreachable(ClientError):
    """No HTTP answer: connection refused, timed out or dropped."""


class ApiError(ClientError):
    """The collector answered with an error status; ``detail`` is its explanation."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        try:
            detail: Any = response.json().get("detail", response.text)
        except (ValueError, AttributeError):
            detail = response.text
        if isinstance(detail, list):  # validation errors: say which parameter and why
            detail = "; ".join(
                f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', e)}" for e in detail
            )
        return cls(response.status_code, str(detail) or response.reason_phrase)


def _params(**values: Any) -> dict[str, str]:
    out = {}
    for name, value in values.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        if value is not None:
            out[name] = str(value)
    return out


class Client:
    """The collector's API at ``url``; ``token`` is sent as ``Authorization: Bearer``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_config(cls, config: ClientConfig, **kwargs: Any) -> Client:
        return cls(config.url, token=config.api_token(), **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> bytes:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the collector at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise ApiError.of(response)
        return response.content

    # ------------------------------------------------------------------ alerts

    def alerts(
        self,
        *,
        run: str | None = None,
        rank: int | None = None,
        rule: str | None = None,
        severity: str | None = None,
        state: str | None = None,
        since: float | str | datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> AlertList:
        """A page of alerts matching every filter given, newest first (``GET /alerts``)."""
        params = _params(
            run=run, rank=rank, rule=rule, severity=severity, state=state, since=since,
            limit=limit, offset=offset,
        )  # fmt: skip
        return AlertList.model_validate_json(self._call("GET", "/alerts", params=params))

    def alert(self, alert_id: int) -> Alert:
        """One alert with its flight recorder; ApiError (404) if unknown."""
        return ALERT_JSON.validate_json(self._call("GET", f"/alerts/{int(alert_id)}"))

    def ack(self, alert_id: int) -> Alert:
        """Acknowledge an alert (its state stays); the alert as it is now."""
        return ALERT_JSON.validate_json(self._call("POST", f"/alerts/{int(alert_id)}/ack"))

    # ------------------------------------------------------------------ runs

    def runs(self) -> RunList:
        """Every run the collector knows, newest first, with its ranks."""
        return RunList.model_validate_json(self._call("GET", "/runs"))

    def run(self, name: str) -> RunDetail:
        """Latest statistics of a live run, per rank; ApiError (404) if not live."""
        path = "/runs/" + quote(name, safe="")
        return RunDetail.model_validate_json(self._call("GET", path))

    # ------------------------------------------------------------------ stream

    def stream(
        self,
        *,
        last_event_id: int | None = None,
        run: str | None = None,
        rank: int | None = None,
        rule: str | None = None,
        severity: str | None = None,
        state: str | None = None,
        on_connect: Callable[[int], None] | None = None,
        reconnect: bool = True,
    ) -> Iterator[Alert]:
        """Alert changes as they happen, matching every filter given, in order; each alert's
        ``seq`` is the change's number. With ``last_event_id``, the changes after it come first.

        A dropped connection or a restarted collector is reconnected (waiting 0.5 s, doubling
        to 10 s while it fails) from the last change received: none is missed or repeated.
        ``on_connect(position)`` runs on each connection, before its changes, with the number
        of the change the stream starts after. ``reconnect=False`` ends the iteration when
        the connection ends (Unreachable if there was none)."""
        params = _params(run=run, rank=rank, rule=rule, severity=severity, state=state)
        last, wait = last_event_id, RECONNECT_SECONDS[0]
        while True:
            try:
                for item in self._connect(params, last):
                    if isinstance(item, int):  # the stream's start: connected
                        if last is not None and item < last:
                            log.warning("the collector's alert history restarted at %d", item)
                        last, wait = item, RECONNECT_SECONDS[0]
                        if on_connect is not None:
                            on_connect(item)
                    else:
                        last = item.seq
                        yield item
                if not reconnect:
                    return
            except httpx.TransportError as exc:
                if not reconnect:
                    raise Unreachable(f"cannot reach the collector at {self.url}: {exc}") from None
                log.debug("alert stream from %s lost (%s); reconnecting", self.url, exc)
            time.sleep(wait)
            wait = min(wait * 2, RECONNECT_SECONDS[1])

    def _connect(self, params: dict[str, str], last: int | None) -> Iterator[int | Alert]:
        """One connection: its start position, then its alerts; ends when the server does."""
        headers = {"Accept": "text/event-stream"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        timeout = httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT)
        with self._http.stream(
            "GET", "/alerts/stream", params=params, headers=headers, timeout=timeout
        ) as response:
            if response.status_code >= 500:  # a proxy or a collector starting: try again
                raise httpx.RemoteProtocolError(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                response.read()
                raise ApiError.of(response)
            started = False
            for event in sse.parse(response.iter_lines()):
                if not started:
                    started = True
                    yield int(event.id or 0)
                if event.event == "alert" and event.data is not None:
                    try:
                        yield ALERT_JSON.validate_json(event.data)
                    except ValidationError as exc:
                        raise ClientError(f"bad alert event from {self.url}: {exc}") from None
