"""Cheap statistics (GradStats) against direct computations on known tensors."""

from __future__ import annotations

import math

import pytest
import torch

from gradwatch.agent.stats import GradStats


def _params(*tensors: torch.Tensor) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(t.clone()) for t in tensors]


def test_stats_rows_match_direct_norms_max_mean_and_weight_norm() -> None:
    ps = _params(torch.tensor([3.0, -4.0]), torch.arange(6.0).reshape(2, 3))
    ps[0].grad = torch.tensor([1.0, -2.0])
    ps[1].grad = torch.tensor([[0.5, -1.5, 2.0], [0.0, 0.0, -3.0]])
    buf, nograd = GradStats(ps).compute()
    rows = buf[:8].reshape(2, 4)
    for i, p in enumerate(ps):
        g = p.grad
        assert g is not None
        expected = [g.norm(), g.abs().max(), g.abs().mean(), p.detach().norm()]
        torch.testing.assert_close(rows[i], torch.stack(expected))
    total = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in ps if p.grad is not None))
    assert math.isclose(float(buf[8]), total, rel_tol=1e-6)
    assert float(buf[9]) == 0.0
    assert nograd == []


def test_stats_missing_grad_is_listed_in_nograd_with_zero_row() -> None:
    ps = _params(torch.ones(3), torch.full((2,), 2.0), torch.ones(4))
    ps[0].grad = torch.ones(3)
    ps[2].grad = torch.full((4,), -2.0)
    buf, nograd = GradStats(ps).compute()
    rows = buf[:12].reshape(3, 4)
    assert nograd == [1]
    assert rows[1, :3].tolist() == [0.0, 0.0, 0.0]
    assert math.isclose(float(rows[1, 3]), math.sqrt(8.0), rel_tol=1e-6)
    assert math.isclose(float(buf[12]), math.sqrt(3 + 16), rel_tol=1e-6)


def test_stats_counts_nonfinite_gradients_per_parameter() -> None:
    ps = _params(torch.ones(3), torch.ones(3), torch.ones(3))
    ps[0].grad = torch.tensor([1.0, float("nan"), 2.0])
    ps[1].grad = torch.tensor([float("inf"), float("inf"), 0.0])
    ps[2].grad = torch.ones(3)
    buf, _ = GradStats(ps).compute()
    rows = buf[:12].reshape(3, 4)
    assert math.isnan(float(rows[0, 0])) and math.isinf(float(rows[1, 0]))
    assert float(buf[13]) == 2.0
    assert not math.isfinite(float(buf[12]))


def test_stats_mixed_dtypes_keep_tracked_row_order_and_append_extras() -> None:
    a = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    b = torch.nn.Parameter(torch.full((2,), 3.0))
    c = torch.nn.Parameter(torch.full((3,), 2.0, dtype=torch.bfloat16))
    a.grad = torch.full((4,), 0.5, dtype=torch.bfloat16)
    b.grad = torch.tensor([3.0, 4.0])
    c.grad = torch.full((3,), -1.0, dtype=torch.bfloat16)
    buf, _ = GradStats([a, b, c]).compute([torch.tensor(7.0), torch.tensor([8.0, 9.0])])
    rows = buf[:12].reshape(3, 4)
    torch.testing.assert_close(rows[:, 0], torch.tensor([1.0, 5.0, math.sqrt(3.0)]))
    torch.testing.assert_close(rows[:, 1], torch.tensor([0.5, 4.0, 1.0]))
    torch.testing.assert_close(rows[:, 2], torch.tensor([0.5, 3.5, 1.0]))
    assert buf[14:].tolist() == [7.0, 8.0, 9.0]


def test_stats_cpu_stacked_chunked_and_missing_paths_match_direct_computation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gradwatch.agent.stats as stats_mod

    monkeypatch.setattr(stats_mod, "CHUNK", 7)  # the 30-element tensor is read in 5 chunks
    torch.manual_seed(3)
    same = [torch.nn.Parameter(torch.randn(3, 4)) for _ in range(3)]  # stacked together
    big = torch.nn.Parameter(torch.randn(30))  # reduced alone, in chunks
    params = [same[0], big, same[1], same[2]]
    for p in params:
        p.grad = torch.randn_like(p)
    gs = GradStats(params, scratch_bytes=1 << 20)
    assert any(b.scratch is not None and len(b.idx) == 3 for b in gs.groups[0].batches)

    def expected(ps: list[torch.nn.Parameter]) -> torch.Tensor:
        rows = []
        for p in ps:
            g = p.grad if p.grad is not None else torch.zeros(1)
            rows.append([g.norm(), g.abs().max(), g.abs().mean() * (g.numel() / p.numel()),
                         p.detach().norm()])  # fmt: skip
        return torch.tensor(rows)

    buf, nograd = gs.compute()
    torch.testing.assert_close(buf[:16].reshape(4, 4), expected(params))
    assert nograd == []
    same[1].grad = None  # a missing gradient breaks the stack for that step only
    buf, nograd = gs.compute()
    torch.testing.assert_close(buf[:16].reshape(4, 4), expected(params))
    assert nograd == [2]
