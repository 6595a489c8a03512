"""The alert record: what fired, where, why, and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import ConfigDict, TypeAdapter

Severity = Literal["info", "warning", "error", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
AlertStateName = Literal["pending", "firing", "resolved"]
STATES: tuple[str, ...] = ("pending", "firing", "resolved")


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
    history: list[tuple[int, float | None]] = field(default_factory=list)
    """Flight recorder: recent (step, value) pairs that led to the alert (null: not finite)."""
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
