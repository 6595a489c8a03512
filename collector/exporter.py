"""Prometheus exposition of the collector's state, built at scrape time from the latest values.

``build_registry`` returns a fresh registry holding one custom collector, then client_python's
standard process, platform and GC collectors (``process_*``, ``python_*``); every scrape walks the
fleet, the alert book and the ingest counters once. Label sets are bounded by design: per rank a
fixed set of aggregates and one learning rate per param group, per parameter only the current
top-k offenders (see docs/metrics.md).
"""

from __future__ import annotations

import functools
import platform
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any, Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from gradwatch import __version__
from gradwatch.wire import KINDS
from gradwatch.wire import metrics as m

from .alert import Alert
from .exposition import Rank, Samples, TextSamples, go_float
from .fleet import Fleet
from .health import LIMITS, PEER_REFUSALS, REJECT_REASONS, IngestHealth
from .metric_specs import SPECS
from .ranking import summary
from .state import RankState

BUILD_INFO: tuple[str, str, str] = (
    __version__,
    platform.python_version(),
    package_version("prometheus_client"),
)
"""``gradwatch_build_info``'s labels: gradwatch, Python and prometheus_client versions."""
STANDARD_COLLECTORS: tuple[Collector, ...] = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR)
"""client_python's process_*, python_info and python_gc_* collectors (the process-wide ones its
default registry holds: shared, so building registries adds no gc callbacks)."""
STEP_DURATION_LE: tuple[tuple[str, str], ...] = tuple(
    (go_float(b), m.step_duration_le(b)) for b in m.STEP_DURATION_BUCKETS
)
"""``le`` label and metric key of each step-duration bucket below ``+Inf``."""
NOTIFICATION_RESULTS: tuple[str, ...] = ("success", "failure", "dropped")
UPDATE_RATIO_STATS: dict[str, float] = {"min": 0.0, "p50": 0.5, "p95": 0.95, "max": 1.0}
"""Quantiles of the per-parameter update ratio exported per rank, by ``stat`` label."""
MEMORY_KINDS: dict[str, str] = {
    "allocated": m.MEMORY_ALLOCATED,
    "reserved": m.MEMORY_RESERVED,
    "peak": m.MEMORY_PEAK,
    "total": m.MEMORY_TOTAL,
    "rss": m.RSS,
}
_FROM_METRICS: dict[str, str] = {  # exported name -> key of Stats.metrics
    "gradwatch_grad_norm": m.GRAD_NORM,
    "gradwatch_step_time_seconds": m.STEP_TIME,
    "gradwatch_tokens_per_second": m.TOKENS_PER_SECOND,
    "gradwatch_samples_per_second": m.SAMPLES_PER_SECOND,
    "gradwatch_mfu_ratio": m.MFU,
    "gradwatch_grad_scale": m.GRAD_SCALE,
    "gradwatch_cuda_ooms_total": m.OOMS,
    "gradwatch_cuda_alloc_retries_total": m.ALLOC_RETRIES,
    "gradwatch_scaler_skipped_steps_total": m.SCALER_SKIPPED,
    "gradwatch_tokens_total": m.TOKENS_TOTAL,
    "gradwatch_samples_total": m.SAMPLES_TOTAL,
}


class AlertSource(Protocol):
    def alerts(self, state: str | None = None) -> list[Alert]: ...
    def firing_by_rule(self) -> Counter[tuple[str, str, str]]: ...
    @property
    def unsaved(self) -> int: ...


class ExporterConfig(Protocol):
    @property
    def topk(self) -> int: ...
    @property
    def grace_seconds(self) -> float: ...


class NotificationCounts(Protocol):
    @property
    def counts(self) -> Mapping[str, int]: ...


class StoreFailures(Protocol):
    @property
    def failures(self) -> int: ...


PARAMETER_STATES: tuple[str, ...] = ("tracked", "frozen", "not_updated", "nonfinite", "no_grad")


@dataclass(frozen=True)
class WorkerScrape:
    """A ``--workers`` worker's part of a scrape (msgpack-able fields)."""

    lines: dict[str, list[str]]
    """Its runs' sample lines, by family."""
    runs: int
    health: dict[str, Any]
    """:meth:`IngestHealth.snapshot`."""


class GradwatchRegistry(CollectorRegistry):
    """A registry holding one :class:`GradwatchCollector`, then the standard collectors;
    :meth:`text` is the fast scrape."""

    def __init__(self, collector: GradwatchCollector) -> None:
        super().__init__(auto_describe=False)
        self.gradwatch = collector
        self.register(collector)
        self.standard = CollectorRegistry(auto_describe=False)
        for c in STANDARD_COLLECTORS:
            self.register(c)
            self.standard.register(c)

    def text(self) -> bytes:
        """The scrape in the Prometheus text format (what ``generate_latest`` returns)."""
        sink = TextSamples(SPECS)
        self.gradwatch.fill(sink)
        return sink.text() + generate_latest(self.standard)

    def text_with(self, parts: list[WorkerScrape]) -> bytes:
        """The scrape of a ``--workers`` main process, over its workers' ``parts``."""
        return self.gradwatch.text_with(parts) + generate_latest(self.standard)

    def part(self) -> WorkerScrape:
        """A worker's part of a scrape (its runs, its ingest health)."""
        sink = TextSamples(SPECS)
        runs = self.gradwatch.fill_runs(sink)
        lines = {name: lines for name, lines in sink.lines.items() if lines}
        return WorkerScrape(lines, runs, self.gradwatch.health.snapshot())


def build_registry(
    fleet: Fleet,
    book: AlertSource,
    health: IngestHealth,
    config: ExporterConfig,
    *,
    notifications: NotificationCounts | None = None,
    store: StoreFailures | None = None,
    clock: Callable[[], float] = time.time,
) -> GradwatchRegistry:
    """A fresh registry whose one collector exports ``fleet``, ``book`` and ``health``.

    ``notifications`` is the Alertmanager pusher (anything with ``counts``), when there is one;
    ``store`` the database (anything with ``failures``).
    """
    return GradwatchRegistry(
        GradwatchCollector(fleet, book, health, config, notifications, store, clock)
    )


class GradwatchCollector:
    """Custom collector: builds every family at scrape time from the latest state."""

    def __init__(
        self,
        fleet: Fleet,
        book: AlertSource,
        health: IngestHealth,
        config: ExporterConfig,
        notifications: NotificationCounts | None,
        store: StoreFailures | None,
        clock: Callable[[], float],
    ) -> None:
        self.fleet, self.book, self.health, self.config = fleet, book, health, config
        self.notifications, self.store, self.clock = notifications, store, clock

    def collect(self) -> Iterator[Metric]:
        sink = Samples(SPECS)
        self.fill(sink)
        yield from sink.families()

    def fill(self, fams: Samples) -> None:
        """Add every sample of one scrape to ``fams`` (either sink)."""
        started = time.perf_counter()
        self._collector_health(fams, self.health)
        fams.add("gradwatch_runs", [], self.fill_runs(fams))
        fams.add("gradwatch_scrape_duration_seconds", [], time.perf_counter() - started)

    def fill_runs(self, fams: Samples) -> int:
        """Add the samples of the runs (each labelled by its run) to ``fams``; return how many
        runs were exported. A ``--workers`` worker's part of a scrape."""
        ranks = self._exported_ranks()
        world: dict[str, int] = {}
        for r in ranks:  # the lowest rank's hello says
            world.setdefault(r.run, r.hello.world_size)
        runs = set(world)
        for run, size in world.items():
            fams.add("gradwatch_run_world_size", [run], size)
        firing = self.book.firing_by_rule()
        for key, n in sorted(firing.items()):
            if key[2] in runs:
                fams.add("gradwatch_alerts_firing", key, n)
        for state in ranks:
            _export_rank(fams, state, self.config.topk)
        return len(runs)

    def text_with(self, parts: list[WorkerScrape]) -> bytes:
        """The scrape of a ``--workers`` collector (text): this process's collector health
        with the workers' added, then every worker's runs."""
        started = time.perf_counter()
        fams = TextSamples(SPECS)
        self._collector_health(fams, self.health.combined([p.health for p in parts]))
        fams.add("gradwatch_runs", [], sum(p.runs for p in parts))
        for part in parts:
            for name, lines in part.lines.items():
                fams.lines[name].extend(lines)
        fams.add("gradwatch_scrape_duration_seconds", [], time.perf_counter() - started)
        return fams.text()

    def _collector_health(self, fams: Samples, h: IngestHealth) -> None:
        fams.add("gradwatch_build_info", BUILD_INFO, 1)
        fams.add("gradwatch_collector_start_time_seconds", [], h.started_at)
        fams.add("gradwatch_messages_total", [], h.messages)
        for kind in sorted({*KINDS, *h.received}):
            fams.add("gradwatch_frames_received_total", [kind], h.received.get(kind, 0))
        for reason in sorted({*REJECT_REASONS, *h.rejected}):
            fams.add("gradwatch_frames_rejected_total", [reason], h.rejected.get(reason, 0))
        for reason in PEER_REFUSALS:
            fams.add("gradwatch_peers_refused_total", [reason], h.refused_peers.get(reason, 0))
        for limit in LIMITS:
            fams.add("gradwatch_limit_hits_total", [limit], h.limit_hits.get(limit, 0))
        for rule, n in sorted(h.rule_errors.items()):
            fams.add("gradwatch_rule_errors_total", [rule], n)
        fams.add(
            "gradwatch_store_write_failures_total",
            [],
            0 if self.store is None else self.store.failures,
        )
        fams.add("gradwatch_alerts_unsaved", [], self.book.unsaved)
        fams.histogram("gradwatch_ingest_latency_seconds", h.latency.cumulative(), h.latency.total)
        fams.histogram("gradwatch_ingest_lag_seconds", h.lag.cumulative(), h.lag.total)
        fams.add("gradwatch_ingest_queue_depth", [], h.queued)
        fams.add("gradwatch_ingest_behind", [], float(bool(h.lagging())))
        fams.add("gradwatch_frames_shed_total", [], h.shed)
        counts = {} if self.notifications is None else dict(self.notifications.counts)
        for result in sorted({*NOTIFICATION_RESULTS, *counts}):
            fams.add("gradwatch_alertmanager_notifications_total", [result], counts.get(result, 0))

    def _exported_ranks(self) -> list[RankState]:
        """Ranks of live runs and of runs that ended less than ``grace_seconds`` ago."""
        now, grace = self.clock(), self.config.grace_seconds
        out: list[RankState] = []
        for run in list(self.fleet.runs.values()):
            if run.ended and now - run.last_seen > grace:
                continue
            out.extend(run.ranks[k] for k in sorted(run.ranks))
        return out


def _export_rank(fams: Samples, r: RankState, topk: int) -> None:
    """Add one rank's samples to ``fams`` (the hot path of a scrape: one call per rank)."""
    who = Rank(r.run, str(r.rank))

    def put(name: str, value: float | None, extra: str | None = None) -> None:
        if value is not None:
            fams.rank(name, who, value, extra)

    h = r.hello
    info = (*who.values, h.host, h.device, h.device_uuid, h.optimizer, h.torch)
    fams.add("gradwatch_run_info", info, 1)
    put("gradwatch_last_frame_timestamp_seconds", r.last_seen)
    put("gradwatch_rank_ended", float(r.ended))
    put("gradwatch_agent_frames_dropped_total", r.dropped)
    put("gradwatch_step", r.last_step)
    put("gradwatch_optimizer_steps_total", max(r.last_step, 0))
    stats = r.stats
    metrics: Mapping[str, float] = {} if stats is None else stats.metrics
    if stats is not None:
        put("gradwatch_loss", stats.loss)
        for group, lr in zip(group_labels(h.groups, len(stats.lr)), stats.lr, strict=True):
            put("gradwatch_learning_rate", lr, group)
    for name, key in _FROM_METRICS.items():
        put(name, metrics.get(key))
    count = metrics.get(m.STEP_DURATION_COUNT)
    if count is not None:
        buckets = [(le, metrics.get(key, count)) for le, key in STEP_DURATION_LE]
        total = metrics.get(m.STEP_DURATION_SUM, 0.0)
        fams.rank_histogram(
            "gradwatch_step_duration_seconds", who, [*buckets, ("+Inf", count)], total
        )
    for kind, key in MEMORY_KINDS.items():
        put("gradwatch_memory_bytes", metrics.get(key), kind)
    # Percentiles travel only on full steps; ``full_metrics`` holds the latest full step's
    # metrics so they do not vanish between full steps.
    full_metrics: Mapping[str, float] = r.full_metrics or metrics
    for p in m.GRAD_PERCENTILES:
        put("gradwatch_grad_abs", full_metrics.get(m.grad_percentile(p)), f"p{p}")

    view = summary(r, topk, UPDATE_RATIO_STATS)
    nonfinite = metrics.get(m.NONFINITE_GRADS)
    put("gradwatch_parameters", len(r.names), "tracked")
    put("gradwatch_parameters", len(h.params) - len(r.names), "frozen")
    put("gradwatch_parameters", view.not_updated, "not_updated")
    put("gradwatch_parameters", view.nonfinite if nonfinite is None else nonfinite, "nonfinite")
    put("gradwatch_parameters", 0 if stats is None else len(stats.nograd), "no_grad")
    if r.full_step >= 0:
        put("gradwatch_update_step", r.full_step)
        for stat, value in view.ratio_stats:
            put("gradwatch_update_ratio", value, stat)
    for name, g in view.top_grad:
        put("gradwatch_param_grad_norm", g, name)
    for name, u in view.low_ratio:
        put("gradwatch_param_update_ratio", u, name)


@functools.lru_cache(maxsize=1024)
def group_labels(names: tuple[str, ...], n: int) -> tuple[str, ...]:
    """The ``group`` label of each of ``n`` param groups: its name (from the hello) when it has
    one that no other group's label shares, else its index."""
    labels = [names[i] if i < len(names) and names[i] else str(i) for i in range(n)]
    seen = Counter(labels)
    labels = [label if seen[label] == 1 else str(i) for i, label in enumerate(labels)]
    if len(set(labels)) < n:  # a name equal to another group's index: indices only
        return tuple(map(str, range(n)))
    return tuple(labels)
