"""Exporter: names, bounded label sets, grace period, and promtool on the exposition."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from gradwatch.collector.alert import Alert
from gradwatch.collector.exporter import build_registry, group_labels
from gradwatch.collector.fleet import Fleet
from gradwatch.collector.health import IngestHealth
from gradwatch.collector.metric_specs import METRIC_NAMES, SPECS
from gradwatch.wire import REJECT_REASONS, Bye, Hello, ParamInfo, Stats, pack_floats
from gradwatch.wire import metrics as m

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
SERIES_GLOBAL = 90
"""Documented bound (docs/metrics.md): collector series + standard + W + R x (54 + G + 2 topk)
+ firing pairs."""
SERIES_STANDARD = 16
"""client_python's process_* (6 on Linux) and python_* (info + 9 gc) series."""
SERIES_RANK = 54
"""Per-rank series besides learning rates and top-k (docs/metrics.md)."""
STANDARD = ("process_", "python_")


@dataclass(frozen=True)
class Config:
    """Stand-in for the core's CollectorConfig (the fields the exporter reads)."""

    topk: int = 10
    grace_seconds: float = 60.0


@dataclass
class Book:
    items: list[Alert] = field(default_factory=list)
    unsaved: int = 0

    def alerts(self, state: str | None = None) -> list[Alert]:
        return [a for a in self.items if state is None or a.state == state]

    def firing_by_rule(self) -> Counter[tuple[str, str, str]]:
        return Counter((a.rule, a.severity, a.run) for a in self.alerts("firing"))


@dataclass
class Counts:
    counts: dict[str, int] = field(default_factory=lambda: {"success": 3, "failure": 1})


BOUNDS = m.STEP_DURATION_BUCKETS


def make_fleet(ranks: int, params: int, run: str = "r1", now: float = 1000.0) -> Fleet:
    """A fleet of one run with synthetic hello and stats (one full step) on every rank."""
    fleet = Fleet()
    table = tuple(
        ParamInfo(f"layers.{i}.weight", (8, 8), "float32", 64, i % 50 != 49) for i in range(params)
    )
    for rank in range(ranks):
        session = f"s{rank}"
        hello = Hello(run, rank, session, ranks, "host", 1, "2.4", "cpu", "AdamW", table,
                      device_uuid=f"GPU-{rank}", groups=("decay", ""))  # fmt: skip
        fleet.apply(hello, now)
        n = len(hello.tracked)
        rows = [1.0 + i for i in range(n)]  # grad_norm
        rows[0] = math.nan
        # (update_norm, update_ratio, unchanged_frac, underflow_frac) + (|g| max, mean, ||w||);
        # layers.3 did not move
        full = [
            v
            for i in range(n)
            for v in ((0, 0, 1, 0) if i == 3 else (1, 1e-3 * (i + 1), 0, 0)) + (0.1, 0.01, 2.0)
        ]
        metrics = {"grad_norm": 5.0, "tokens_per_second": 1e4, "memory_allocated_bytes": 2e9}
        metrics |= {"rss_bytes": 1e9, "mfu_ratio": 0.4, "grad_p50": 0.01, "nonfinite_grads": 1}
        metrics |= {m.TOKENS_TOTAL: 51200.0, m.SAMPLES_TOTAL: 400.0}
        metrics |= {m.STEP_DURATION_COUNT: 49.0, m.STEP_DURATION_SUM: 12.5}
        metrics |= {m.step_duration_le(b): min(49.0, 10.0 * i) for i, b in enumerate(BOUNDS)}
        stats = Stats(run, rank, session, 1, 50, now, 2.5, (3e-4, 3e-5), pack_floats(rows))
        stats = Stats(**{**stats.__dict__, "full": pack_floats(full), "metrics": metrics})
        fleet.apply(stats, now)
    return fleet


def scrape(fleet: Fleet, book: Book | None = None, now: float = 1000.0, **cfg: float) -> str:
    health = IngestHealth(started_at=now - 10)
    health.received["stats"] += 5
    health.latency.observe(0.002)
    registry = build_registry(
        fleet, book or Book(), health, Config(**cfg), notifications=Counts(), clock=lambda: now
    )
    return generate_latest(registry).decode()


def samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(rf"{name}[{{ ]", line)]


def test_exporter_emits_aggregates_and_rejected_reasons_from_the_start() -> None:
    text = scrape(make_fleet(2, 20))
    for reason in REJECT_REASONS:
        assert f'gradwatch_frames_rejected_total{{reason="{reason}"}} 0.0' in text
    assert 'gradwatch_loss{rank="1",run="r1"} 2.5' in text
    assert 'gradwatch_learning_rate{group="decay",rank="0",run="r1"} 0.0003' in text
    assert 'gradwatch_learning_rate{group="1",rank="0",run="r1"} 3e-05' in text  # unnamed
    assert 'gradwatch_memory_bytes{kind="allocated",rank="0",run="r1"} 2e+09' in text
    assert 'gradwatch_parameters{rank="0",run="r1",state="not_updated"} 1.0' in text
    assert 'gradwatch_parameters{rank="0",run="r1",state="frozen"} 0.0' in text
    assert 'gradwatch_alertmanager_notifications_total{result="failure"} 1.0' in text
    assert re.search(r'gradwatch_build_info\{prometheus_client="[\d.]+",python="3\.', text)
    assert samples(text, "gradwatch_ingest_latency_seconds_count") == [
        "gradwatch_ingest_latency_seconds_count 1.0"
    ]


def test_exporter_topk_lists_largest_grad_norms_with_nan_first_and_smallest_update_ratios() -> None:
    text = scrape(make_fleet(1, 100), topk=3)
    grads = samples(text, "gradwatch_param_grad_norm")
    assert [g.split('parameter="')[1].split('"')[0] for g in grads] == [
        "layers.0.weight",
        "layers.98.weight",  # layers.49 and layers.99 are frozen (requires_grad=False)
        "layers.97.weight",
    ]
    assert grads[0].endswith(" NaN")
    ratios = samples(text, "gradwatch_param_update_ratio")
    assert len(ratios) == 3 and '"layers.3.weight"' in ratios[0] and ratios[0].endswith(" 0.0")
    quantiles = samples(text, "gradwatch_update_ratio")
    assert len(quantiles) == 4 and 'stat="p50"' in quantiles[1]


def test_exporter_counts_frozen_parameters_and_alerts_firing_per_rule() -> None:
    fleet = make_fleet(1, 100)
    alert = Alert(1, "nonfinite_grad", "critical", "firing", "r1", 0, "layers.0.weight", 50, None,
                  None, "NaN gradient", "skip the batch", 999.0, 999.0)  # fmt: skip
    text = scrape(fleet, Book([alert, Alert(**{**alert.__dict__, "id": 2, "state": "resolved"})]))
    assert 'gradwatch_parameters{rank="0",run="r1",state="frozen"} 2.0' in text
    assert samples(text, "gradwatch_alerts_firing") == [
        'gradwatch_alerts_firing{rule="nonfinite_grad",run="r1",severity="critical"} 1.0'
    ]


def test_exporter_drops_finished_runs_after_the_grace_period_only() -> None:
    fleet = make_fleet(2, 10, now=1000.0)
    for rank in range(2):
        fleet.apply(Bye("r1", rank, f"s{rank}", 2, 60, 1001.0), now=1001.0)
    assert 'gradwatch_rank_ended{rank="0",run="r1"} 1.0' in scrape(fleet, now=1050.0)
    late = scrape(fleet, now=1062.0)
    assert not samples(late, "gradwatch_loss") and not samples(late, "gradwatch_run_info")
    assert "gradwatch_runs 0.0" in late
    live = make_fleet(1, 10, now=1000.0)  # no bye: stays exported however old
    assert samples(scrape(live, now=10_000.0), "gradwatch_loss")


def test_exporter_series_count_is_bounded_for_64_ranks_of_500_parameters() -> None:
    text = scrape(make_fleet(64, 500), topk=10)
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    bound = SERIES_GLOBAL + SERIES_STANDARD + 1 + 64 * (SERIES_RANK + 2 + 2 * 10)
    assert len(series) <= bound, len(series)
    assert len(samples(text, "gradwatch_param_grad_norm")) == 64 * 10


def test_exporter_emits_only_documented_families() -> None:
    text = scrape(make_fleet(1, 10))
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert {f for f in families if not f.startswith(STANDARD)} == set(METRIC_NAMES)
    assert {"process_cpu_seconds_total", "python_info", "python_gc_collections_total"} <= families
    doc = DOCS.read_text()
    for spec in SPECS:
        row = f"| `{spec.name}` | {spec.type} | {', '.join(f'`{x}`' for x in spec.labels)} |"
        assert row in doc, f"docs/metrics.md lacks or misdescribes {spec.name}: {row}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_exporter_output_passes_promtool_check_metrics() -> None:
    text = scrape(make_fleet(2, 50))
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_exporter_fast_text_is_byte_for_byte_generate_latest() -> None:
    """/metrics is written by the text sink; it must equal client_python's exposition of the
    same samples, escapes, NaN/Inf and every family included."""
    fleet = make_fleet(3, 60)
    nasty = 'r"\\\n\u00e9'
    for frame in (
        Hello(nasty, 0, "sx", 1, 'h"\\', 1, "2.4", "cpu", "AdamW",
              (ParamInfo('w"\n\\', (2,), "float32", 2, True),)),
        Stats(nasty, 0, "sx", 1, 5, 1.0, math.inf, (1e9, 5e-324), pack_floats([math.nan])),
    ):  # fmt: skip
        fleet.apply(frame, 1000.0)
    alert = Alert(1, "non_finite", "critical", "firing", nasty, 0, None, 5, None, None, "m", "a",
                  999.0, 999.0)  # fmt: skip
    health = IngestHealth(started_at=990.0, messages=12)
    health.rejected["schema"] += 2
    health.limit_hits["max_runs"] += 1
    health.rule_errors.update({"loss_spike": 3, "non_finite": 0})
    health.latency.observe(0.002)
    registry = build_registry(
        fleet, Book([alert]), health, Config(topk=4), notifications=Counts(), clock=lambda: 1000.0
    )

    def stable(text: bytes) -> bytes:
        # Values that change between two scrapes: scrape time, CPU seconds, gc counts, ...
        return re.sub(
            rb"(?m)^(gradwatch_scrape_duration_seconds|process_|python_gc_).*$", b"", text
        )

    fast = registry.text()
    assert stable(fast) == stable(generate_latest(registry))
    assert b'run="r\\"\\\\\\n\xc3\xa9"' in fast and b"+Inf" in fast and b"NaN" in fast


def test_exporter_collector_series_are_the_documented_count() -> None:
    from gradwatch.collector.config import CollectorConfig
    from gradwatch.collector.core import build_core

    core = build_core(CollectorConfig(), persist=False)
    text = core.registry.text().decode()
    series = [line for line in text.splitlines() if line and line[0] != "#"]
    assert len([s for s in series if not s.startswith(STANDARD)]) == SERIES_GLOBAL
    if Path("/proc/self/stat").exists():  # process_* needs Linux's /proc
        assert len(series) == SERIES_GLOBAL + SERIES_STANDARD


def test_exporter_counters_and_step_duration_histogram_per_rank() -> None:
    text = scrape(make_fleet(2, 10))
    assert 'gradwatch_tokens_total{rank="1",run="r1"} 51200.0' in text
    assert 'gradwatch_samples_total{rank="0",run="r1"} 400.0' in text
    assert 'gradwatch_optimizer_steps_total{rank="0",run="r1"} 50.0' in text
    hist = samples(text, "gradwatch_step_duration_seconds_bucket")
    assert len(hist) == 2 * (len(BOUNDS) + 1)
    assert hist[0] == 'gradwatch_step_duration_seconds_bucket{le="0.01",rank="0",run="r1"} 0.0'
    assert 'gradwatch_step_duration_seconds_bucket{le="1.0",rank="0",run="r1"} 49.0' in hist
    assert 'gradwatch_step_duration_seconds_bucket{le="+Inf",rank="1",run="r1"} 49.0' in hist
    assert 'gradwatch_step_duration_seconds_count{rank="0",run="r1"} 49.0' in text
    assert 'gradwatch_step_duration_seconds_sum{rank="0",run="r1"} 12.5' in text


def test_exporter_run_world_size_and_gpu_uuid() -> None:
    fleet = make_fleet(3, 10)
    for frame in make_fleet(1, 10, run="other").runs["other"].ranks.values():
        fleet.apply(frame.hello, 1000.0)
    text = scrape(fleet)
    assert samples(text, "gradwatch_run_world_size") == [
        'gradwatch_run_world_size{run="r1"} 3.0',
        'gradwatch_run_world_size{run="other"} 1.0',
    ]
    info = samples(text, "gradwatch_run_info")
    assert 'gpu_uuid="GPU-2"' in info[2] and 'rank="2"' in info[2]


def test_exporter_without_new_metrics_sends_no_counters_or_histogram() -> None:
    fleet = Fleet()  # an older agent: no totals, no durations, no group names
    table = (ParamInfo("w", (2,), "float32", 2, True),)
    fleet.apply(Hello("old", 0, "s", 1, "h", 1, "2.4", "cpu", "SGD", table), 1000.0)
    lrs = tuple(1e-3 * (i + 1) for i in range(40))
    fleet.apply(Stats("old", 0, "s", 1, 3, 1000.0, 1.0, lrs, pack_floats([1.0])), 1000.0)
    text = scrape(fleet)
    assert not samples(text, "gradwatch_tokens_total")
    assert not samples(text, "gradwatch_step_duration_seconds_bucket")
    assert 'gradwatch_optimizer_steps_total{rank="0",run="old"} 3.0' in text
    lr = samples(text, "gradwatch_learning_rate")
    assert len(lr) == 40 and 'group="39"' in lr[-1]  # every group, none cut at 16


def test_exporter_group_labels_are_names_when_unique_else_indices() -> None:
    assert group_labels((), 3) == ("0", "1", "2")
    assert group_labels(("enc", "", "dec"), 3) == ("enc", "1", "dec")
    assert group_labels(("a", "a", "b"), 4) == ("0", "1", "b", "3")  # shared name, missing
    assert group_labels(("2", ""), 3) == ("0", "1", "2")  # a name equal to an index
    assert group_labels(("x", "y", "z"), 2) == ("x", "y")  # more names than rates
