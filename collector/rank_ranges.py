"""Rank sets in a short, bounded form for people: ``0-39``, ``0-3,7,9-12``, ``0,2,4 +509 more``.

Alert notifications name the ranks an alert covers; at 1,024 ranks a plain list is kilobytes of
text that Slack and PagerDuty truncate or reject. Consecutive ranks collapse into ranges and at
most ``max_runs`` ranges are written; the rest are counted.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_RUNS = 16
"""Ranges written before the rest are summarised as ``+N more``."""


def rank_runs(ranks: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, de-duplicated ``ranks`` as inclusive ``(first, last)`` runs of consecutive ranks."""
    runs: list[tuple[int, int]] = []
    for rank in sorted(set(ranks)):
        if runs and rank == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], rank)
        else:
            runs.append((rank, rank))
    return runs


def compact_ranks(ranks: Iterable[int], max_runs: int = MAX_RUNS) -> str:
    """``[0, 1, 2, 3, 7, 9, 10, 11, 12]`` → ``"0-3,7,9-12"``; ranks beyond the first ``max_runs``
    ranges are counted: ``"0,2,4 +509 more"`` (``N`` counts ranks, not ranges). Empty → ``""``."""
    if max_runs < 1:
        raise ValueError(f"max_runs must be positive, got {max_runs}")
    runs = rank_runs(ranks)
    shown = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:max_runs])
    hidden = sum(b - a + 1 for a, b in runs[max_runs:])
    return shown + (f" +{hidden} more" if hidden else "")
