"""GradStats (gradient norms every step, |g| and weight details on full steps) against direct
computations on known tensors."""

from __future__ import annotations

import math

import pytest
import torch

from gradwatch import wire
from gradwatch.agent.stats import DETAIL_COLS, GradStats
from gradwatch.agent.updates import NCOLS as UPDATE_COLS


def _params(*tensors: torch.Tensor) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(t.clone()) for t in tensors]


def _norms(gs: GradStats) -> tuple[torch.Tensor, list[int]]:
    """The ``(n,)`` norms vector that the parts of ``norms()`` concatenate into."""
    parts, nograd = gs.norms()
    return torch.cat([t.reshape(-1).float() for t in parts]), nograd


def test_stats_full_rows_are_the_update_columns_then_the_details() -> None:
    assert UPDATE_COLS + DETAIL_COLS == len(wire.FULL_FIELDS)
    assert wire.FULL_FIELDS[UPDATE_COLS:] == ("grad_absmax", "grad_absmean", "weight_norm")
    assert wire.CHEAP_FIELDS == ("grad_norm",)


def test_stats_norms_and_details_match_direct_computation() -> None:
    ps = _params(torch.tensor([3.0, -4.0]), torch.arange(6.0).reshape(2, 3))
    ps[0].grad = torch.tensor([1.0, -2.0])
    ps[1].grad = torch.tensor([[0.5, -1.5, 2.0], [0.0, 0.0, -3.0]])
    gs = GradStats(ps)
    norms, nograd = _norms(gs)
    details = gs.details()
    assert norms.dtype == torch.float32 and details.shape == (2, DETAIL_COLS)
    for i, p in enumerate(ps):
        g = p.grad
        assert g is not None
        assert math.isclose(float(norms[i]), float(g.norm()), rel_tol=1e-6)
        expected = [g.abs().max(), g.abs().mean(), p.detach().norm()]
        torch.testing.assert_close(details[i], torch.stack(expected))
    assert nograd == []


def test_stats_missing_grad_is_listed_in_nograd_with_zero_norm_and_details() -> None:
    ps = _params(torch.ones(3), torch.full((2,), 2.0), torch.ones(4))
    ps[0].grad = torch.ones(3)
    ps[2].grad = torch.full((4,), -2.0)
    gs = GradStats(ps)
    norms, nograd = _norms(gs)
    assert nograd == [1]
    assert norms.tolist() == pytest.approx([math.sqrt(3.0), 0.0, 4.0])
    details = gs.details()
    assert details[1, :2].tolist() == [0.0, 0.0]
    assert math.isclose(float(details[1, 2]), math.sqrt(8.0), rel_tol=1e-6)


def test_stats_nonfinite_gradients_give_nonfinite_norms() -> None:
    ps = _params(torch.ones(3), torch.ones(3), torch.ones(3))
    ps[0].grad = torch.tensor([1.0, float("nan"), 2.0])
    ps[1].grad = torch.tensor([float("inf"), float("inf"), 0.0])
    ps[2].grad = torch.ones(3)
    norms, _ = _norms(GradStats(ps))
    assert math.isnan(float(norms[0])) and math.isinf(float(norms[1]))
    assert float(norms[2]) == pytest.approx(math.sqrt(3.0))


def test_stats_mixed_dtypes_keep_tracked_row_order_and_accumulate_in_fp32() -> None:
    a = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    b = torch.nn.Parameter(torch.full((2,), 3.0))
    c = torch.nn.Parameter(torch.full((3,), 2.0, dtype=torch.bfloat16))
    a.grad = torch.full((4,), 0.5, dtype=torch.bfloat16)
    b.grad = torch.tensor([3.0, 4.0])
    c.grad = torch.full((3,), -1.0, dtype=torch.bfloat16)
    gs = GradStats([a, b, c])
    norms, _ = _norms(gs)
    torch.testing.assert_close(norms, torch.tensor([1.0, 5.0, math.sqrt(3.0)]))
    details = gs.details()
    assert details.dtype == torch.float32
    torch.testing.assert_close(details[:, 0], torch.tensor([0.5, 4.0, 1.0]))
    torch.testing.assert_close(details[:, 1], torch.tensor([0.5, 3.5, 1.0]))
    torch.testing.assert_close(details[:, 2], torch.tensor([2.0, math.sqrt(18.0), math.sqrt(12.0)]))


def test_stats_big_gradients_are_read_in_chunks_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gradwatch.agent.stats as stats_mod

    monkeypatch.setattr(stats_mod, "CHUNK", 7)  # the 30-element tensor is read in 5 chunks
    torch.manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(30)), torch.nn.Parameter(torch.randn(3, 4))]
    for p in params:
        p.grad = torch.randn_like(p)
    params[0].grad[11] = -9.0  # the largest |g|, negative, in the middle chunk
    details = GradStats(params).details()
    for i, p in enumerate(params):
        g = p.grad
        assert g is not None
        expected = torch.stack([g.abs().max(), g.abs().mean(), p.detach().norm()])
        torch.testing.assert_close(details[i], expected)
    assert float(details[0, 0]) == 9.0


def test_stats_nonfinite_counts_are_exact_for_the_asked_rows() -> None:
    ps = _params(torch.ones(6), torch.ones(4), torch.ones(2))
    ps[0].grad = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 0.0, 2.0])
    ps[1].grad = torch.ones(4)
    counts = GradStats(ps).nonfinite_counts([0, 1, 2])  # row 2 has no gradient
    assert counts.dtype == torch.float32
    assert counts.tolist() == [[0.0, 3.0], [0.0, 0.0], [0.0, 0.0]]  # (high, low) base 2**24
