"""The one ranking of "worst parameters", shared by the exporter and the run view."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def worst(
    names: Sequence[str], values: Sequence[float], k: int, *, highest: bool
) -> list[tuple[str, float]]:
    """The ``k`` (name, value) pairs with the highest (or lowest) values.

    A non-finite value (a NaN gradient norm, an Inf update ratio) is the worst of all and ranks
    first either way; ties keep the parameter order."""
    n = min(len(names), len(values))
    if n == 0 or k <= 0:
        return []
    v = np.asarray(values[:n], dtype=np.float64)
    key = np.where(np.isfinite(v), v if highest else -v, np.inf)
    order = np.argsort(-key, kind="stable")[:k]
    return [(names[i], float(v[i])) for i in order.tolist()]
