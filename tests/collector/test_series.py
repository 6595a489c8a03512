"""The page's per-rank history: fixed memory, shape kept (extremes at their steps), NaN marks,
exact samples at alert steps, restarts and forgotten runs."""

from __future__ import annotations

import math

import pytest

from gradwatch.collector.series import BUCKETS, PINS, SERIES, SeriesStore, Track
from tests.helpers.fake_rank import FakeRank, Harness


def test_series_track_memory_and_points_stay_bounded() -> None:
    track = Track(16)
    sizes = set()
    for step in range(1, 100_001):
        track.add(step, math.sin(step / 500))
        sizes.add(len(track.data))
    assert sizes == {16 * 5}
    assert track.used <= 16 and track.width == 8192
    steps, values = track.points()
    assert len(steps) <= 2 * 16 and steps == sorted(steps)
    assert steps[0] <= 8192 and steps[-1] > 100_000 - 2 * 8192  # covers the whole run


def test_series_track_keeps_a_spike_at_its_exact_step_through_every_merge() -> None:
    track = Track(8)
    for step in range(1, 50_001):
        track.add(step, 1000.0 if step == 31_337 else 1.0 + (step % 7) / 100)
    steps, values = track.points()
    assert dict(zip(steps, values, strict=True))[31_337] == 1000.0
    assert min(v for v in values if v is not None) == 1.0


def test_series_track_marks_non_finite_samples_as_null_at_their_step() -> None:
    track = Track(4)
    for step in range(1, 101):
        track.add(step, math.nan if step in (40, 41) else (math.inf if step == 90 else 2.0))
    steps, values = track.points()
    nulls = [s for s, v in zip(steps, values, strict=True) if v is None]
    assert 40 in nulls and 90 in nulls  # the first bad step of each bucket
    assert all(v == 2.0 for v in values if v is not None)


def test_series_track_rejects_an_odd_bucket_count() -> None:
    with pytest.raises(ValueError, match="buckets"):
        Track(7)


def test_series_store_pins_the_sample_where_an_alert_opened() -> None:
    h = Harness()
    r = FakeRank("run", 0)
    h.send(r.hello())
    swing = {"grad_norm": 1.0}, {"grad_norm": 4.0}  # a bucket's extremes lie at other steps
    for step in range(1, 50):
        h.send(r.stats(step, loss=3.0 - step / 100, metrics=swing[step % 2]))
    h.send(r.stats(50, loss=math.nan, metrics={"grad_norm": 2.5}))  # non_finite opens here
    for step in range(51, 5000):
        h.send(r.stats(step, loss=2.0 + (step % 3) / 10, metrics=swing[step % 2]))
    [alert] = [a for a in h.book.alerts() if a.rule == "non_finite"]
    assert alert.first_step == 50
    history = h.core.series.read("run", 0, list(SERIES))
    assert history is not None and history.last_step == 4999
    loss = history.metrics["loss"]
    by_step = dict(zip(loss.steps, loss.values, strict=True))
    assert 50 in by_step and by_step[50] is None  # NaN shows as null, at the alert's step
    assert loss.samples_per_bucket > 1 and len(loss.steps) <= 3 * BUCKETS + PINS
    norms = history.metrics["grad_norm"]
    grad = dict(zip(norms.steps, norms.values, strict=True))
    assert grad[50] == 2.5  # neither minimum nor maximum of its bucket: kept by the pin
    assert set(grad.values()) == {1.0, 4.0, 2.5}
    assert {"loss", "lr", "grad_norm", "step_time_seconds"} <= set(history.metrics)
    assert "rss_bytes" not in history.metrics  # never sent: left out


def test_series_store_starts_anew_when_a_rank_restarts_from_an_earlier_step() -> None:
    h = Harness()
    first = FakeRank("run", 0)
    h.send(first.hello())
    for step in range(1, 101):
        h.send(first.stats(step))
    h.send(first.bye(100))  # it crashed
    again = FakeRank("run", 0)  # a new process resuming from the checkpoint at step 60
    h.send(again.hello())
    for step in range(60, 70):
        h.send(again.stats(step))
    history = h.core.series.read("run", 0, ["loss"])
    assert history is not None
    assert history.metrics["loss"].steps[0] == 60 and history.last_step == 69


def test_series_store_forgets_ranks_the_fleet_forgot() -> None:
    h = Harness()
    old = FakeRank("old", 0)
    h.send(old.hello())
    h.send(old.stats(1))
    h.fleet.forget("old")
    new = FakeRank("new", 0)
    h.send(new.hello())
    h.send(new.stats(1))
    assert h.core.series.read("old", 0, ["loss"]) is None
    assert h.core.series.ranks() == 1


def test_series_store_reads_only_what_was_asked_and_nothing_for_unknown_ranks() -> None:
    h = Harness()
    r = FakeRank("run", 3)
    h.send(r.hello())
    h.send(r.stats(1, loss=None))
    store: SeriesStore = h.core.series
    history = store.read("run", 3, ["loss", "lr"])
    assert history is not None and set(history.metrics) == {"lr"}  # no loss logged
    assert store.read("run", 0, ["lr"]) is None
