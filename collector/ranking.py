"""The one ranking of "worst parameters", shared by the exporter and the run view."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import inf, isfinite
from typing import TYPE_CHECKING

import numpy as np

from .params import Floats

if TYPE_CHECKING:
    from .state import RankState

SMALL = 64
"""Below this many parameters the ranking is done in plain Python (same order as numpy's)."""


def worst(
    names: Sequence[str], values: Sequence[float] | Floats, k: int, *, highest: bool
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


@dataclass(frozen=True)
class ParamSummary:
    """What a scrape exports about one rank's parameters, derived once per frame."""

    top_grad: list[tuple[str, float]]
    """The top-k largest gradient norms (non-finite first)."""
    low_ratio: list[tuple[str, float]]
    """The top-k smallest update ratios of the latest full step (non-finite first)."""
    ratio_stats: list[tuple[str, float]]
    """(stat, value) quantiles of the finite update ratios."""
    nonfinite: int
    """Parameters whose latest gradient norm is not finite."""
    not_updated: int
    """Parameters whose weights did not change at all on the latest full step."""


def summary(rank: RankState, k: int, quantiles: Mapping[str, float]) -> ParamSummary:
    """The rank's :class:`ParamSummary`, computed at most once per stats frame (kept in
    ``rank.derived``, which the ingest thread replaces on every frame)."""
    derived = rank.derived  # before the columns: a frame landing now cannot go stale here
    key = ("summary", k)
    got = derived.get(key)
    if isinstance(got, ParamSummary):
        return got
    empty = np.zeros(0)
    grad = rank.columns.get("grad_norm", empty)
    full = rank.full_columns
    ratio = full.get("update_ratio", empty)
    finite = np.sort(ratio[np.isfinite(ratio)])
    stats = (
        [(s, float(finite[round(q * (len(finite) - 1))])) for s, q in quantiles.items()]
        if len(finite)
        else []
    )
    if "unchanged_frac" in full:
        not_updated = int(np.count_nonzero(full["unchanged_frac"] >= 1.0))
    else:
        not_updated = int(np.count_nonzero(full.get("update_norm", empty) == 0.0))
    out = ParamSummary(
        worst(rank.names, grad, k, highest=True),
        worst(rank.names, ratio, k, highest=False),
        stats,
        int(np.count_nonzero(~np.isfinite(grad))),
        not_updated,
    )
    derived[key] = out
    return out
