"""The console listener of the alert book: one log line when an alert fires or resolves."""

from __future__ import annotations

import logging

from .alert import Alert
from .rank_ranges import compact_ranks


def describe(alert: Alert) -> str:
    """One console line for a person."""
    where = f"run={alert.run} rank={alert.rank} step={alert.step}"
    if len(alert.covers) > 1:
        where += f" ranks={compact_ranks(alert.covers)}"
    if alert.parameter:
        where += f" param={alert.parameter}"
    if alert.state == "resolved":
        return f"RESOLVED {alert.rule} [{alert.severity}] #{alert.id} {where}"
    head = f"ALERT {alert.rule} [{alert.severity}] #{alert.id} {where}"
    return f"{head}: {alert.message} — {alert.action}"


class ConsoleLog:
    """A listener that logs one line when an alert starts firing and when it resolves."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("gradwatch.collector.alerts")
        self._logged: dict[int, str] = {}

    def __call__(self, alert: Alert) -> None:
        if alert.state == "pending" or self._logged.get(alert.id) == alert.state:
            return
        if alert.state == "resolved" and alert.id not in self._logged:
            return  # a pending alert that never fired
        self._logged[alert.id] = alert.state
        if alert.state == "resolved":
            del self._logged[alert.id]
            self.logger.info(describe(alert))
        else:
            self.logger.warning(describe(alert))
