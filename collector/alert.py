"""The alert record: what fired, where, why, and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, PlainSerializer, TypeAdapter

Severity = Literal["info", "warning", "error", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
AlertStateName = Literal["pending", "firing", "resolved"]
STATES: tuple[str, ...] = ("pending", "firing", "resolved")
COLLECTOR_RUN = ""
"""The run of a collector-level alert (``collector_limit``): no real run is named so."""
COLLECTOR_RANK = -1
"""The rank of a collector-level alert."""


@dataclass(frozen=True)
class HistoryPoint:
    """One point of an alert's flight recorder, as the API shows it."""

    step: int
    value: float | None
    """null when not finite."""


def _point(pair: tuple[int, float | None]) -> HistoryPoint:
    return HistoryPoint(pair[0], pair[1])


def _pair(value: object) -> object:
    """The API's ``{"step", "value"}`` read back (the client validates what it receives)."""
    if isinstance(value, dict) and set(value) == {"step", "value"}:
        return (value["step"], value["value"])
    if isinstance(value, HistoryPoint):
        return (value.step, value.value)
    return value


Point = Annotated[
    tuple[int, float | None],
    BeforeValidator(_pair),
    PlainSerializer(_point, return_type=HistoryPoint),
]
"""A ``(step, value)`` pair in memory and in SQLite; ``{"step", "value"}`` in the API."""


@dataclass
class Alert:
    """One alert instance; identity across updates is its fingerprint. The API serves it as it
    is (its docstrings document the fields in OpenAPI)."""

    __pydantic_config__ = ConfigDict(use_attribute_docstrings=True)  # the API's schema

    id: int
    rule: str
    """Canonical rule name, see docs/rules.md."""
    severity: Severity
    state: AlertStateName
    run: str
    rank: int
    """The origin or culprit: the rank where the condition started (the first whose loss went
    non-finite, the first to crash, the one a hang waits for), else the first rank it was
    seen on."""
    parameter: str | None
    """Offending parameter, when the rule names one."""
    step: int
    """Training step at which the condition was last seen."""
    value: float | None
    """Observed value (null in JSON when not finite: the message says what it was)."""
    threshold: float | None
    message: str
    """What happened, in a sentence a person can act on."""
    action: str
    """What to do about it."""
    started_at: float
    """Unix seconds."""
    updated_at: float
    resolved_at: float | None = None
    acked: bool = False
    history: list[Point] = field(default_factory=list)
    """Flight recorder: recent ``{step, value}`` points that led to the alert."""
    first_step: int = -1
    """Training step at which the condition was first seen: the onset."""
    ranks: list[int] = field(default_factory=list)
    """Every rank the alert covers, ascending (one alert per job and cause: the same rule
    firing on several ranks of a run joins it). Empty in alerts stored before ranks were
    recorded: then just ``rank``."""
    seq: int = 0
    """Change sequence number of the alert's latest change (state or ack): rises with every
    change of any alert, survives restarts, and is the id of the change's ``/alerts/stream``
    event (0: unchanged since before sequences were recorded)."""

    @property
    def fingerprint(self) -> tuple[str, str, str]:
        """Identity of an open alert: one per rule, run and cause (parameter), whatever ranks
        it covers."""
        return (self.rule, self.run, self.parameter or "")

    @property
    def covers(self) -> list[int]:
        """The ranks it covers: ``ranks``, or just ``rank`` for an older stored alert."""
        return self.ranks or [self.rank]

    def to_json(self) -> bytes:
        """The alert as the API shows it (NaN and Inf become null)."""
        return ALERT_JSON.dump_json(self)


ALERT_JSON: TypeAdapter[Alert] = TypeAdapter(Alert)
