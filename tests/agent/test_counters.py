"""Running totals over every optimizer step: tokens and samples logged (numbers or device
tensors) and the step-duration histogram, carried cumulative by the sampled frames."""

from __future__ import annotations

import torch

import gradwatch.agent as ga
from gradwatch import wire
from gradwatch.agent.counters import Counters
from gradwatch.wire import metrics as m
from tests.helpers.frame_sink import FrameSink


def _train(sink: FrameSink, steps: int, **settings: object) -> list[wire.Stats]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ga.watch(model, opt, run="t", endpoint=sink.endpoint, **settings) as mon:
        for _ in range(steps):
            model(torch.randn(3, 4)).sum().backward()
            mon.log(tokens=torch.tensor(5), samples=2)
            mon.log(tokens=2)  # several logs in one step add up, tensor and number alike
            opt.step()
            opt.zero_grad()
    assert mon.errors == 0
    sink.drain(until=wire.Bye)
    return [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]


def test_counters_totals_count_every_step_not_only_sampled_ones(sink: FrameSink) -> None:
    frames = _train(sink, 10, every=4, full_every=1000)
    assert [f.step for f in frames][-2:] == [4, 8]  # steps 1-3, 5-7, 9, 10 not sampled
    for f in frames:
        assert f.metrics[m.TOKENS_TOTAL] == 7 * f.step
        assert f.metrics[m.SAMPLES_TOTAL] == 2 * f.step
        # Every step after the first is timed (the first has no previous end).
        assert f.metrics[m.STEP_DURATION_COUNT] == f.step - 1


def test_counters_histogram_buckets_are_cumulative_and_end_at_the_count(
    sink: FrameSink,
) -> None:
    last = _train(sink, 6, every=3)[-1]
    keys = [m.step_duration_le(b) for b in m.STEP_DURATION_BUCKETS]
    buckets = [last.metrics[k] for k in keys]
    assert buckets == sorted(buckets) and buckets[-1] <= last.metrics[m.STEP_DURATION_COUNT]
    assert last.metrics[m.STEP_DURATION_COUNT] == 5
    assert 0 < last.metrics[m.STEP_DURATION_SUM]


def test_counters_without_logged_tokens_send_no_token_totals(sink: FrameSink) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ga.watch(model, opt, run="t", endpoint=sink.endpoint) as mon:
        for _ in range(3):
            model(torch.randn(3, 4)).sum().backward()
            opt.step()
    assert mon.errors == 0
    sink.drain(until=wire.Bye)
    last = [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)][-1]
    assert m.TOKENS_TOTAL not in last.metrics and m.SAMPLES_TOTAL not in last.metrics
    assert last.metrics[m.STEP_DURATION_COUNT] == 2


def test_counters_bucket_bounds_hold_steps_of_exactly_that_duration() -> None:
    c = Counters()
    for seconds in (0.01, 0.011, 120.0, 121.0):
        c.observe_step(seconds)
    got = c.snapshot().metrics([])
    assert got[m.step_duration_le(0.01)] == 1  # le: at most the bound
    assert got[m.step_duration_le(0.025)] == 2
    assert got[m.step_duration_le(120)] == 3
    assert got[m.STEP_DURATION_COUNT] == 4  # the +Inf bucket
    assert got[m.STEP_DURATION_SUM] == 0.01 + 0.011 + 120.0 + 121.0


def test_counters_device_totals_stay_exact_past_float32() -> None:
    c = Counters()
    big = torch.tensor(2**24, dtype=torch.int64)  # float32 cannot add 1 to this
    c.add_logged({"tokens": big})
    c.add_logged({"tokens": torch.tensor(1)})
    snap = c.snapshot()
    (total,) = snap.device.values()
    assert total.dtype == torch.float64
    assert snap.metrics([float(total)])[m.TOKENS_TOTAL] == 2**24 + 1
