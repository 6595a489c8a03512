"""The agent speaks the wire vocabulary: every metric key it emits is in ``wire.METRICS``,
and none is typed by hand in its code."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

import gradwatch.agent as ga
from gradwatch import wire
from tests.helpers.frame_sink import FrameSink

AGENT = Path(ga.__file__).resolve().parent


def test_vocabulary_every_emitted_metric_key_is_a_wire_metric(sink: FrameSink) -> None:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.AdamW(m.parameters(), lr=torch.tensor(1e-3))  # a tensor lr too
    mon = ga.watch(
        m, opt, run="t", endpoint=sink.endpoint, full_every=2, flops_per_token=1e3,
        peak_flops=1e9,
    )  # fmt: skip
    sink.drain(until=wire.Hello)
    for _ in range(4):
        loss = m(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        opt.step()
        mon.log(loss=loss, tokens=32, samples=4, val_loss=1.0)
        opt.zero_grad()
    mon.close()
    sink.drain(until=wire.Bye)
    stats = [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]
    emitted = {k for s in stats for k in s.metrics}
    assert emitted <= set(wire.METRICS), emitted - set(wire.METRICS)
    # A loop with full steps, tokens, samples and flops emits these on the CPU at least.
    m_ = wire.metrics
    expected = {m_.GRAD_NORM, m_.MFU, m_.RSS, m_.MEMORY_TOTAL, m_.grad_percentile(50)}
    assert expected <= emitted


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    }


def test_vocabulary_no_metric_key_is_typed_by_hand_in_the_agent() -> None:
    names = set(wire.METRICS) | {wire.metrics.LOSS, *wire.metrics.SUMMED}
    typed = {
        f"{path.relative_to(AGENT)}: {s}"
        for path in sorted(AGENT.rglob("*.py"))
        for s in _string_constants(path) & names
    }
    assert typed == {"integrations/lightning.py: loss"}  # Lightning's own output key
