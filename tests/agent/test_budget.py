"""Frame size and agent memory budgets."""

from __future__ import annotations

import gc
import tracemalloc

import torch

import gradwatch.agent as ga
from gradwatch import wire
from tests.helpers.frame_sink import FrameSink, free_endpoint
from tests.helpers.waiting import wait_until


def _many_params(n: int) -> torch.nn.Module:
    m = torch.nn.Module()
    for i in range(n):
        m.register_parameter(f"layer{i}_weight", torch.nn.Parameter(torch.randn(4)))
    return m


def test_budget_frame_bytes_at_most_40_per_param_plus_fixed(sink: FrameSink) -> None:
    n = 200
    m = _many_params(n)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    mon = ga.watch(m, opt, run="t", endpoint=sink.endpoint, full_every=2)
    sink.drain(until=wire.Hello)
    for _ in range(2):
        for p in m.parameters():
            p.grad = torch.randn(4)
        opt.step()
        mon.log(loss=1.0, tokens=128)
    mon.close()
    sink.drain(until=wire.Bye)
    stats = [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]
    cheap, full = (len(wire.encode(s)) for s in stats)
    assert stats[1].full and not stats[0].full
    assert cheap <= 40 * n + 1024
    assert full <= 40 * n + 1024


def test_budget_agent_memory_per_param_and_flat_over_10000_steps() -> None:
    n = 100
    m = _many_params(n)
    for p in m.parameters():
        p.grad = torch.randn(4)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    # flush_seconds=0: measure what the agent retains, not frames waiting in the sender's
    # coalescing window (those are bounded by queue_size: at most 16 bytes a row each).
    cfg = ga.AgentConfig(
        run="t",
        endpoint=free_endpoint(),
        every=50,
        full_every=500,
        heartbeat_seconds=1e9,
        flush_seconds=0.0,
    )
    mon = ga.Monitor(m, opt, cfg)
    pre, post = mon._pre_hook, mon._post_hook
    sizes = []
    for i in range(10_000):
        pre(opt, (), {})  # the hook bodies alone: opt.step() itself is not what we measure
        post(opt, (), {})
        if i % 2_500 == 2_499:
            # What the agent retains, not frames still queued for a sender thread that a busy
            # machine has not scheduled yet (those are bounded by queue_size).
            wait_until(lambda: not mon.sender._items)
            gc.collect()
            sizes.append(tracemalloc.get_traced_memory()[0] - base)
    mon.close()
    tracemalloc.stop()
    assert mon.step == 10_000 and mon.errors == 0
    assert max(sizes) <= 4096 * n + 256 * 1024
    assert sizes[-1] - sizes[0] <= 16 * 1024  # flat
