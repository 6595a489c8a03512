"""The collector's own health counters, updated by ingest (and the book) and read by the exporter.

Every ZeroMQ message read is counted once in :attr:`IngestHealth.messages` and then either
accepted (``received`` by kind) or rejected (``rejected`` by one of :data:`REJECT_REASONS`), so
``messages == sum(received) + sum(rejected)`` at all times.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gradwatch import wire

LIMITS: tuple[str, ...] = ("max_runs", "max_ranks", "max_params", "max_open_alerts")
"""Limits of the collector (each a setting of the same name); a hit is counted and raises the
``collector_limit`` alert. The first three refuse frames (a rejection reason of that name)."""
REJECT_REASONS: tuple[str, ...] = (
    *wire.REJECT_REASONS,
    "duplicate_rank",
    "max_runs",
    "max_ranks",
    "max_params",
    "shutdown",
    "overloaded",
    "internal",
)
"""Why the collector dropped a message: the wire's reasons (``malformed`` .. ``no_hello``), then
the collector's own: ``duplicate_rank`` (a second process for a live run and rank), a limit
(``max_runs``, ``max_ranks``, ``max_params``), ``shutdown`` (read but not handled before the
shutdown deadline), ``overloaded`` (with ``--workers``: the run's worker had ``rcvhwm`` frames
waiting) and ``internal`` (a collector bug; logged)."""
PEER_REFUSALS: tuple[str, ...] = ("auth", "handshake")
"""Why a ZeroMQ peer was refused (with ``--curve-keys``): ``auth`` (its CURVE key is not among
the accepted ones), ``handshake`` (no CURVE at all, a wrong server key, a broken handshake)."""

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


BEHIND_SECONDS = 5.0
"""Ingest counts as behind (``/readyz``, ``gradwatch_ingest_behind``) for this long after it
last found a full read batch waiting."""
LAG_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Bounds of ``gradwatch_ingest_lag_seconds``."""


@dataclass
class Histogram:
    """Cumulative-bucket histogram in the Prometheus sense (upper bounds, +Inf implied)."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count) pairs including ``+Inf``."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(frozen=True)
class LimitHit:
    """The latest time a limit refused something."""

    at: float
    """Collector wall clock."""
    value: int
    """The limit's setting."""
    detail: str
    """What was refused, for a person."""


_COUNTERS = ("received", "rejected", "refused_peers", "limit_hits", "rule_errors")
_HISTOGRAMS = ("latency", "lag")
"""The fields of :class:`IngestHealth` a ``--workers`` worker reports and the main one adds."""


@dataclass
class IngestHealth:
    """Messages read, frames accepted by kind, rejected by reason, refused peers, limit hits,
    rule errors, and how long handling one frame took."""

    messages: int = 0
    """ZeroMQ messages read from the socket."""
    received: Counter[str] = field(default_factory=Counter)
    """Accepted frames by kind."""
    rejected: Counter[str] = field(default_factory=Counter)
    """Dropped messages by reason (:data:`REJECT_REASONS`)."""
    refused_peers: Counter[str] = field(default_factory=Counter)
    """Peers refused at the handshake, by reason (:data:`PEER_REFUSALS`)."""
    limit_hits: Counter[str] = field(default_factory=Counter)
    """Things refused by a limit, by limit (:data:`LIMITS`)."""
    last_hit: dict[str, LimitHit] = field(default_factory=dict)
    rule_errors: Counter[str] = field(default_factory=Counter)
    """Exceptions raised by a rule, by rule name (the frame is still judged by the others)."""
    latency: Histogram = field(default_factory=Histogram)
    lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))
    """Collector wall clock at handling minus the frame's own ``time`` (clock skew between
    hosts included; negative values count as 0)."""
    queued: int = 0
    """Messages read from ZeroMQ and not handled yet (at most one read batch)."""
    shed: int = 0
    """Stats frames judged without the sheddable rules (load shedding)."""
    behind: str = ""
    """How far behind ingest was when it last fell behind, for ``/readyz``."""
    behind_at: float = -1e18
    """``time.monotonic()`` when ingest last found a full read batch waiting."""
    started_at: float = 0.0

    def lagging(self) -> str:
        """Why ingest is behind now ("" when it keeps up)."""
        return self.behind if time.monotonic() - self.behind_at < BEHIND_SECONDS else ""

    def reject(self, exc: wire.WireError, now: float) -> None:
        """Count a rejected message; a refusal by a limit (``exc.limit``) is also a hit."""
        self.rejected[exc.reason] += 1
        limit = getattr(exc, "limit", 0)
        if limit:
            self.hit(exc.reason, limit, exc.detail, now)

    def hit(self, limit: str, value: int, detail: str, now: float) -> None:
        """Record that ``limit`` (set to ``value``) refused something."""
        self.limit_hits[limit] += 1
        self.last_hit[limit] = LimitHit(now, value, detail)

    def snapshot(self) -> dict[str, Any]:
        """What a ``--workers`` worker reports of its ingest at a scrape (msgpack-able)."""
        out: dict[str, Any] = {key: dict(getattr(self, key)) for key in _COUNTERS}
        for key in _HISTOGRAMS:
            h: Histogram = getattr(self, key)
            out[key] = [h.counts, h.total, h.n]
        return out | {"queued": self.queued, "shed": self.shed, "behind": self.lagging()}

    def add(self, snapshot: dict[str, Any], name: str) -> None:
        """Add a worker's :meth:`snapshot` (``name`` says which, in ``behind``); its messages
        are this process's to count (the main process reads them all)."""
        for key in _COUNTERS:
            getattr(self, key).update(snapshot[key])
        for key in _HISTOGRAMS:
            mine: Histogram = getattr(self, key)
            counts, total, n = snapshot[key]
            mine.counts = [a + b for a, b in zip(mine.counts, counts, strict=True)]
            mine.total += total
            mine.n += n
        self.queued += snapshot["queued"]
        self.shed += snapshot["shed"]
        if snapshot["behind"]:
            self.behind = f"{name}: {snapshot['behind']}"
            self.behind_at = time.monotonic()

    def combined(self, workers: list[dict[str, Any]]) -> IngestHealth:
        """A new health: this process's (the main one's messages) with the ``workers``'
        snapshots added, for ``/metrics`` and ``/readyz`` of a ``--workers`` collector."""
        out = IngestHealth(messages=self.messages, started_at=self.started_at)
        out.add(self.snapshot(), "main process")
        for k, snapshot in enumerate(workers):
            out.add(snapshot, f"worker {k}")
        return out
