"""The alert record: what fired, where, why, and what to do about it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .jsonsafe import finite_or_none

Severity = Literal["info", "warning", "error", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
AlertStateName = Literal["pending", "firing", "resolved"]
STATES: tuple[str, ...] = ("pending", "firing", "resolved")


@dataclass
class Alert:
    """One alert instance; identity across updates is its fingerprint."""

    id: int
    rule: str
    severity: Severity
    state: AlertStateName
    run: str
    rank: int
    parameter: str | None
    step: int
    """Training step at which the condition was last seen."""
    value: float | None
    threshold: float | None
    message: str
    """What happened, in a sentence a person can act on."""
    action: str
    """What to do about it."""
    started_at: float
    updated_at: float
    resolved_at: float | None = None
    acked: bool = False
    history: list[tuple[int, float]] = field(default_factory=list)
    """Flight recorder: recent (step, value) pairs that led to the alert."""
    first_step: int = -1
    """Training step at which the condition was first seen: the onset."""

    @property
    def fingerprint(self) -> tuple[str, str, int, str]:
        return (self.rule, self.run, self.rank, self.parameter or "")

    def to_json(self) -> dict[str, Any]:
        """The alert as JSON-safe values (NaN/Inf become null; the message says what they were)."""
        out = asdict(self)
        out["value"], out["threshold"] = finite_or_none(self.value), finite_or_none(self.threshold)
        out["history"] = [[s, finite_or_none(v)] for s, v in self.history]
        return out
