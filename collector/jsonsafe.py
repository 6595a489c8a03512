"""JSON and SQLite have no NaN or Inf: the one place that turns them into null."""

from __future__ import annotations

import math


def finite_or_none(x: float | None) -> float | None:
    """``x`` when it is a finite number, else None (messages say what the value was)."""
    return x if x is None or math.isfinite(x) else None
