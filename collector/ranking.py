"""The one ranking of "worst parameters", shared by the exporter and the run view."""

from __future__ import annotations

from collections.abc import Sequence
from math import inf, isfinite

import numpy as np

SMALL = 64
"""Below this many parameters the ranking is done in plain Python (same order as numpy's)."""


def worst(
    names: Sequence[str], values: Sequence[float], k: int, *, highest: bool
) -> list[tuple[str, float]]:
    """The ``k`` (name, value) pairs with the highest (or lowest) values.

    A non-finite value (a NaN gradient norm, an Inf update ratio) is the worst of all and ranks
    first either way; ties keep the parameter order."""
    n = min(len(names), len(values))
    if n == 0 or k <= 0:
        return []
    if n <= SMALL:  # numpy's fixed cost dominates here; a scrape calls this twice per rank
        sign = -1.0 if highest else 1.0
        ranked = sorted(range(n), key=lambda i: sign * values[i] if isfinite(values[i]) else -inf)
        return [(names[i], float(values[i])) for i in ranked[:k]]
    v = np.asarray(values[:n], dtype=np.float64)
    key = np.where(np.isfinite(v), v if highest else -v, np.inf)
    order = np.argsort(-key, kind="stable")[:k]
    return [(names[i], float(v[i])) for i in order.tolist()]
