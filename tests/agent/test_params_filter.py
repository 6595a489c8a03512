"""watch(params=...): only the selected parameters are announced, hooked and measured; the
param groups' names travel in the hello."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import gradwatch.agent as ga
from gradwatch import wire
from gradwatch.wire import metrics as m
from tests.helpers.frame_sink import FrameSink


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _run(
    sink: FrameSink, model: torch.nn.Module, opt: torch.optim.Optimizer, **settings: Any
) -> tuple[wire.Hello, wire.Stats]:
    with ga.watch(model, opt, run="t", endpoint=sink.endpoint, **settings) as mon:
        for _ in range(2):
            model(torch.randn(3, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
    assert mon.errors == 0
    sink.drain(until=wire.Bye)
    hello, stats = sink.of(wire.Hello)[0], sink.of(wire.Stats)[-1]
    assert isinstance(hello, wire.Hello) and isinstance(stats, wire.Stats)
    return hello, stats


@pytest.mark.parametrize(
    "params",
    [
        "2.*",
        " 2.weight , 2.bias ",
        ["2.weight", "2.b*"],
        lambda name, p: name.startswith("2."),
    ],
    ids=["glob", "comma-separated", "list", "predicate"],
)
def test_params_filter_watches_only_the_selected_parameters(
    sink: FrameSink, params: str | list[str] | Callable[[str, torch.Tensor], bool]
) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hello, stats = _run(sink, model, opt, params=params)
    assert [p.name for p in hello.params] == ["2.weight", "2.bias"]
    assert len(stats.rows) == 4 * 2  # one float32 per watched parameter
    assert stats.metrics[m.GRAD_NORM] > 0


def test_params_filter_global_norm_is_over_the_watched_parameters(sink: FrameSink) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights stay: grads are reproducible
    with ga.watch(model, opt, run="t", endpoint=sink.endpoint, params="0.weight") as mon:
        x = torch.randn(3, 4)
        model(x).sum().backward()
        first = model[0]
        assert isinstance(first, torch.nn.Linear) and first.weight.grad is not None
        want = float(first.weight.grad.norm())
        opt.step()
    assert mon.errors == 0
    sink.drain(until=wire.Bye)
    stats = sink.of(wire.Stats)[-1]
    assert isinstance(stats, wire.Stats)
    assert stats.metrics[m.GRAD_NORM] == pytest.approx(want, rel=1e-5)


def test_params_filter_from_the_variable(sink: FrameSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADWATCH_PARAMS", "0.bias")
    model = _model()
    hello, _ = _run(sink, model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert [p.name for p in hello.params] == ["0.bias"]


def test_params_filter_selecting_nothing_is_an_error(sink: FrameSink) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="^params: selects none of the model's 4 parameters"):
        ga.watch(model, opt, run="t", endpoint=sink.endpoint, params="decoder.*")
    assert not opt._optimizer_step_post_hooks  # nothing attached


def test_hello_names_param_groups_that_have_names(sink: FrameSink) -> None:
    model = _model()
    opt = torch.optim.AdamW(
        [
            {"params": model[0].parameters(), "name": "encoder"},
            {"params": model[2].parameters()},  # unnamed: ""
        ],
        lr=1e-3,
    )
    hello, stats = _run(sink, model, opt)
    assert hello.groups == ("encoder", "")
    assert len(stats.lr) == 2


def test_hello_without_group_names_sends_none(sink: FrameSink) -> None:
    model = _model()
    hello, _ = _run(sink, model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert hello.groups == ()
