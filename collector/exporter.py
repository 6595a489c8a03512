"""Prometheus exposition of the collector's state, built at scrape time from the latest values.

``build_registry`` returns a fresh registry holding one custom collector; every scrape walks the
fleet, the alert book and the ingest counters once. Label sets are bounded by design: per rank a
fixed set of aggregates, per parameter only the current top-k offenders (see docs/metrics.md).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from gradwatch import __version__
from gradwatch.wire import KINDS, REJECT_REASONS
from gradwatch.wire import metrics as m

from .alert import Alert
from .health import IngestHealth
from .ranking import worst
from .state import Fleet, RankState

MAX_LR_GROUPS = 16
"""Learning rates exported per rank (optimizer param groups beyond this are left out)."""
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
}


class AlertSource(Protocol):
    def alerts(self, state: str | None = None) -> list[Alert]: ...


class ExporterConfig(Protocol):
    @property
    def topk(self) -> int: ...
    @property
    def grace_seconds(self) -> float: ...


class NotificationCounts(Protocol):
    @property
    def counts(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class MetricSpec:
    """One exported family: its scraped name, type, labels and help text."""

    name: str
    type: Literal["gauge", "counter", "histogram", "info"]
    labels: tuple[str, ...]
    help: str

    def family(self) -> Metric:
        """An empty family of this type (samples are added with :class:`_Families`)."""
        if self.type == "counter":
            return CounterMetricFamily(self.name, self.help, labels=self.labels)
        if self.type == "info":
            return InfoMetricFamily(self.name.removesuffix("_info"), self.help, labels=self.labels)
        if self.type == "histogram":
            return HistogramMetricFamily(self.name, self.help, labels=self.labels)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)


class _Families:
    """One empty family per spec; ``add`` appends a sample by scraped name and label values."""

    def __init__(self) -> None:
        self.specs = {s.name: s for s in SPECS}
        self.fams = {s.name: s.family() for s in SPECS}

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        """Info families take their info labels in ``labels`` too (value 1)."""
        spec = self.specs[name]
        sample_labels = dict(zip(spec.labels, labels, strict=True))
        self.fams[name].add_sample(name, sample_labels, float(value))


_R = ("run", "rank")
_S = MetricSpec
SPECS: tuple[MetricSpec, ...] = (
    _S("gradwatch_build_info", "info", ("version",), "Version of this collector."),
    _S("gradwatch_collector_start_time_seconds", "gauge", (), "Unix time the collector started."),
    _S("gradwatch_frames_received_total", "counter", ("kind",), "Frames accepted, by wire kind."),
    _S("gradwatch_frames_rejected_total", "counter", ("reason",), "Frames dropped, by reason."),
    _S("gradwatch_ingest_latency_seconds", "histogram", (), "Handling time of one frame."),
    _S(
        "gradwatch_alertmanager_notifications_total",
        "counter",
        ("result",),
        "Alerts posted to Alertmanager, by result (success, failure, dropped).",
    ),
    _S("gradwatch_alerts_firing", "gauge", ("rule", "severity", "run"), "Firing alerts."),
    _S("gradwatch_runs", "gauge", (), "Runs exported (live, or ended within the grace period)."),
    _S(
        "gradwatch_run_info",
        "info",
        (*_R, "host", "device", "optimizer", "torch"),
        "Where a rank runs.",
    ),
    _S("gradwatch_last_frame_timestamp_seconds", "gauge", _R, "Collector time of the last frame."),
    _S("gradwatch_rank_ended", "gauge", _R, "1 once the rank said bye, else 0."),
    _S("gradwatch_agent_frames_dropped_total", "counter", _R, "Frames the agent could not send."),
    _S("gradwatch_step", "gauge", _R, "Latest optimizer step."),
    _S("gradwatch_loss", "gauge", _R, "Training loss at the latest sampled step."),
    _S("gradwatch_grad_norm", "gauge", _R, "Global L2 norm of the tracked gradients."),
    _S("gradwatch_learning_rate", "gauge", (*_R, "group"), "Learning rate per param group."),
    _S("gradwatch_step_time_seconds", "gauge", _R, "Wall time of the latest step."),
    _S("gradwatch_tokens_per_second", "gauge", _R, "Training throughput in tokens."),
    _S("gradwatch_samples_per_second", "gauge", _R, "Training throughput in samples."),
    _S("gradwatch_mfu_ratio", "gauge", _R, "Model FLOPs utilisation (0..1)."),
    _S("gradwatch_grad_scale", "gauge", _R, "GradScaler loss scale."),
    _S("gradwatch_memory_bytes", "gauge", (*_R, "kind"), "Device memory and process RSS."),
    _S("gradwatch_cuda_ooms_total", "counter", _R, "CUDA allocator out-of-memory errors."),
    _S("gradwatch_cuda_alloc_retries_total", "counter", _R, "CUDA allocator retries."),
    _S("gradwatch_scaler_skipped_steps_total", "counter", _R, "Steps GradScaler skipped."),
    _S("gradwatch_parameters", "gauge", (*_R, "state"), "Parameters by health state."),
    _S(
        "gradwatch_grad_abs",
        "gauge",
        (*_R, "stat"),
        "Percentiles (p1..p99) of sampled absolute gradients.",
    ),
    _S("gradwatch_update_step", "gauge", _R, "Step of the latest update statistics."),
    _S("gradwatch_update_ratio", "gauge", (*_R, "stat"), "Update/weight norm across params."),
    _S("gradwatch_param_grad_norm", "gauge", (*_R, "parameter"), "Top-k largest grad norms."),
    _S("gradwatch_param_update_ratio", "gauge", (*_R, "parameter"), "Top-k smallest ratios."),
    _S("gradwatch_scrape_duration_seconds", "gauge", (), "Time this scrape took."),
)
METRIC_NAMES: tuple[str, ...] = tuple(s.name for s in SPECS)
PARAMETER_STATES: tuple[str, ...] = ("tracked", "frozen", "not_updated", "nonfinite", "no_grad")


def build_registry(
    fleet: Fleet,
    book: AlertSource,
    health: IngestHealth,
    config: ExporterConfig,
    *,
    notifications: NotificationCounts | None = None,
    clock: Callable[[], float] = time.time,
) -> CollectorRegistry:
    """A fresh registry whose one collector exports ``fleet``, ``book`` and ``health``.

    ``notifications`` is the Alertmanager pusher (anything with ``counts``), when there is one.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GradwatchCollector(fleet, book, health, config, notifications, clock))
    return registry


class GradwatchCollector:
    """Custom collector: yields every family at scrape time from the latest state."""

    def __init__(
        self,
        fleet: Fleet,
        book: AlertSource,
        health: IngestHealth,
        config: ExporterConfig,
        notifications: NotificationCounts | None,
        clock: Callable[[], float],
    ) -> None:
        self.fleet, self.book, self.health, self.config = fleet, book, health, config
        self.notifications, self.clock = notifications, clock

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        fams = _Families()
        self._collector_health(fams)
        ranks = self._exported_ranks()
        runs = {r.run for r in ranks}
        fams.add("gradwatch_runs", [], len(runs))
        firing = Counter(
            (a.rule, a.severity, a.run) for a in self.book.alerts("firing") if a.run in runs
        )
        for key, n in sorted(firing.items()):
            fams.add("gradwatch_alerts_firing", key, n)
        for state in ranks:
            _export_rank(fams, state, self.config.topk)
        fams.add("gradwatch_scrape_duration_seconds", [], time.perf_counter() - started)
        yield from fams.fams.values()

    def _collector_health(self, fams: _Families) -> None:
        h = self.health
        fams.add("gradwatch_build_info", [__version__], 1)
        fams.add("gradwatch_collector_start_time_seconds", [], h.started_at)
        for kind in sorted({*KINDS, *h.received}):
            fams.add("gradwatch_frames_received_total", [kind], h.received.get(kind, 0))
        for reason in sorted({*REJECT_REASONS, *h.rejected}):
            fams.add("gradwatch_frames_rejected_total", [reason], h.rejected.get(reason, 0))
        name = "gradwatch_ingest_latency_seconds"
        fams.fams[name] = HistogramMetricFamily(
            name,
            fams.specs[name].help,
            buckets=h.latency.cumulative(),
            sum_value=h.latency.total,
        )
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


def _export_rank(fams: _Families, r: RankState, topk: int) -> None:
    """Add one rank's samples to ``fams``."""
    lab = [r.run, str(r.rank)]

    def put(name: str, value: float | None, *extra: str) -> None:
        if value is not None:
            fams.add(name, [*lab, *extra], value)

    h = r.hello
    put("gradwatch_run_info", 1, h.host, h.device, h.optimizer, h.torch)
    put("gradwatch_last_frame_timestamp_seconds", r.last_seen)
    put("gradwatch_rank_ended", float(r.ended))
    put("gradwatch_agent_frames_dropped_total", r.dropped)
    put("gradwatch_step", r.last_step)
    stats = r.stats
    metrics: Mapping[str, float] = {} if stats is None else stats.metrics
    if stats is not None:
        put("gradwatch_loss", stats.loss)
        for group, lr in enumerate(stats.lr[:MAX_LR_GROUPS]):
            put("gradwatch_learning_rate", lr, str(group))
    for name, key in _FROM_METRICS.items():
        put(name, metrics.get(key))
    for kind, key in MEMORY_KINDS.items():
        put("gradwatch_memory_bytes", metrics.get(key), kind)
    # Percentiles travel only on full steps; ``full_metrics`` holds the latest full step's
    # metrics so they do not vanish between full steps.
    full_metrics: Mapping[str, float] = r.full_metrics or metrics
    for p in m.GRAD_PERCENTILES:
        put("gradwatch_grad_abs", full_metrics.get(m.grad_percentile(p)), f"p{p}")

    grad = r.columns.get("grad_norm", [])
    nonfinite = metrics.get(m.NONFINITE_GRADS, sum(not math.isfinite(g) for g in grad))
    counts = {
        "tracked": len(r.names),
        "frozen": len(h.params) - len(r.names),
        "not_updated": _count_not_updated(r.full_columns),
        "nonfinite": nonfinite,
        "no_grad": 0 if stats is None else len(stats.nograd),
    }
    for state, n in counts.items():
        put("gradwatch_parameters", n, state)

    ratio = r.full_columns.get("update_ratio", [])
    if r.full_step >= 0:
        put("gradwatch_update_step", r.full_step)
        finite = sorted(x for x in ratio if math.isfinite(x))
        for stat, q in UPDATE_RATIO_STATS.items() if finite else ():
            put("gradwatch_update_ratio", finite[round(q * (len(finite) - 1))], stat)
    for name, g in worst(r.names, grad, topk, highest=True):
        put("gradwatch_param_grad_norm", g, name)
    for name, u in worst(r.names, ratio, topk, highest=False):
        put("gradwatch_param_update_ratio", u, name)


def _count_not_updated(full: Mapping[str, Sequence[float]]) -> int:
    """Tracked parameters whose weights did not change at all on the latest full step."""
    if "unchanged_frac" in full:
        return sum(1 for u in full["unchanged_frac"] if u >= 1.0)
    return sum(1 for u in full.get("update_norm", ()) if u == 0.0)
