"""The parameter table follows the run: parameters frozen or unfrozen mid-run, and param groups
added, are re-announced, and every stats frame fits the hello the collector holds for it."""

from __future__ import annotations

import pytest
import torch

import gradwatch.agent as ga
from gradwatch import wire
from tests.helpers.frame_sink import FrameSink


class TwoLayers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Linear(4, 8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)))  # type: ignore[no-any-return]


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        model(torch.randn(3, 4)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _stream(sink: FrameSink) -> list[tuple[wire.Hello, wire.Stats]]:
    """Each stats frame with the latest hello received before it; all must fit."""
    hello: wire.Hello | None = None
    out = []
    for frame in sink.frames:
        if isinstance(frame, wire.Hello):
            hello = frame
        elif isinstance(frame, wire.Stats):
            assert hello is not None
            wire.check_shape(hello, frame)  # raises when a frame does not fit its table
            out.append((hello, frame))
    return out


def _tracked_names(hello: wire.Hello) -> list[str]:
    return [hello.params[i].name for i in hello.tracked]


def test_table_parameter_unfrozen_at_step_50_is_tracked_from_the_next_full_step(
    sink: FrameSink,
) -> None:
    model = TwoLayers()
    model.body.requires_grad_(False)  # frozen at the start: fine-tune the head first
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with ga.watch(model, opt, run="t", endpoint=sink.endpoint, full_every=10) as mon:
        sink.drain(until=wire.Hello)
        _train(model, opt, 50)
        model.body.requires_grad_(True)
        _train(model, opt, 20)
    assert mon.errors == 0
    sink.drain(until=wire.Bye)
    pairs = _stream(sink)
    assert [s.step for _, s in pairs] == list(range(1, 71))
    for hello, stats in pairs:
        names = _tracked_names(hello)
        column = wire.unpack_columns(wire.CHEAP_FIELDS, stats.rows)["grad_norm"]
        norms = dict(zip(names, column, strict=True))
        if stats.step < 60:  # step 60 is the first full step after the unfreeze
            assert names == ["head.weight", "head.bias"]
        else:
            assert names == ["body.weight", "body.bias", "head.weight", "head.bias"]
            assert norms["body.weight"] > 0
    hellos = [h for h in sink.of(wire.Hello) if isinstance(h, wire.Hello)]
    assert len({tuple(_tracked_names(h)) for h in hellos}) == 2  # (reconnects may repeat one)


def test_table_parameter_frozen_mid_run_is_re_announced_at_the_next_step(
    sink: FrameSink,
) -> None:
    model = TwoLayers()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with ga.watch(model, opt, run="t", endpoint=sink.endpoint, full_every=1000) as mon:
        sink.drain(until=wire.Hello)
        _train(model, opt, 5)
        model.body.weight.requires_grad_(False)
        _train(model, opt, 3)
    assert mon.errors == 0
    sink.drain(until=wire.Bye)
    pairs = _stream(sink)
    # Step 6 shows body.weight without a gradient while it no longer requires one: the table
    # is rebuilt in step 7's pre-hook, after step 6's frame has left.
    frozen = {s.step: "body.weight" not in _tracked_names(h) for h, s in pairs}
    assert frozen == {1: False, 2: False, 3: False, 4: False, 5: False, 6: False, 7: True, 8: True}
    last = sink.of(wire.Hello)[-1]
    assert isinstance(last, wire.Hello)
    assert [p.requires_grad for p in last.params if p.name == "body.weight"] == [False]


def test_table_param_group_added_mid_run_is_re_announced(sink: FrameSink) -> None:
    model = TwoLayers()
    opt = torch.optim.SGD(model.head.parameters(), lr=0.01)
    with ga.watch(model, opt, run="t", endpoint=sink.endpoint, full_every=1000) as mon:
        sink.drain(until=wire.Hello)
        model.body.requires_grad_(False)
        _train(model, opt, 2)
        model.body.requires_grad_(True)
        opt.add_param_group({"params": model.body.parameters(), "lr": 0.0})
        _train(model, opt, 2)
    assert mon.errors == 0
    sink.drain(until=wire.Bye)
    pairs = _stream(sink)
    groups = {s.step: {p.name: p.group for p in h.params} for h, s in pairs}
    assert groups[2]["body.weight"] == -1 and groups[3]["body.weight"] == 1
    assert [s.lr for _, s in pairs][-1] == (0.01, 0.0)


def test_table_memory_limit_is_reported_as_the_memory_total(sink: FrameSink) -> None:
    model = TwoLayers()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    limit = 3 << 30
    with ga.watch(model, opt, run="t", endpoint=sink.endpoint, memory_limit_bytes=limit):
        sink.drain(until=wire.Hello)
        _train(model, opt, 2)
    sink.drain(until=wire.Bye)
    stats = [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]
    assert [s.metrics[wire.metrics.MEMORY_TOTAL] for s in stats] == [float(limit)] * 2
    assert all(s.metrics[wire.metrics.RSS] > 0 for s in stats)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_table_memory_limit_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="memory_limit_bytes"):
        ga.AgentConfig(run="t", memory_limit_bytes=bad)  # type: ignore[arg-type]
