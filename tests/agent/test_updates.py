"""Full-step statistics (UpdateSampler) against direct computations."""

from __future__ import annotations

import math

import torch

from gradwatch.agent.updates import QUANTILES, UpdateSampler


def _sgd_step(params: list[torch.nn.Parameter], lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    opt = torch.optim.SGD(params, lr=lr)
    sampler = UpdateSampler(params, sample_size=1024)
    sampler.before_step()
    opt.step()
    out = sampler.after_step()
    assert out is not None
    return out


def test_updates_norm_and_ratio_match_direct_sgd_update() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0, 2.0]))
    p.grad = torch.tensor([1.0, 0.0, -2.0])
    rows, _ = _sgd_step([p], lr=0.1)
    expected_norm = 0.1 * math.sqrt(5.0)
    assert math.isclose(float(rows[0, 0]), expected_norm, rel_tol=1e-5)
    assert math.isclose(float(rows[0, 1]), expected_norm / 3.0, rel_tol=1e-5)
    assert float(rows[0, 2]) == 0.0  # every element with a gradient moved
    assert float(rows[0, 3]) == 0.0  # fp32 never reports underflow


def test_updates_unchanged_frac_counts_elements_with_gradient_that_did_not_move() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    p.grad = torch.tensor([1.0, 1e-30, 1.0, 0.0])  # 1e-30 * lr vanishes next to 1.0 in fp32
    rows, _ = _sgd_step([p], lr=0.1)
    assert math.isclose(float(rows[0, 2]), 1 / 3, rel_tol=1e-6)


def test_updates_bf16_update_below_half_ulp_is_full_underflow() -> None:
    # seed 003: bf16 norm gains at 1.0, update ~1e-5 < half-ULP(1.0) = 2^-8 -> rounds away
    p = torch.nn.Parameter(torch.ones(64, dtype=torch.bfloat16))
    p.grad = torch.full((64,), 1e-2, dtype=torch.bfloat16)
    rows, _ = _sgd_step([p], lr=1e-3)
    assert float(rows[0, 0]) == 0.0
    assert float(rows[0, 1]) == 0.0
    assert float(rows[0, 2]) == 1.0
    assert float(rows[0, 3]) == 1.0


def test_updates_bf16_large_enough_update_has_no_underflow() -> None:
    p = torch.nn.Parameter(torch.ones(64, dtype=torch.bfloat16))
    p.grad = torch.full((64,), 1.0, dtype=torch.bfloat16)
    rows, _ = _sgd_step([p], lr=0.05)
    assert float(rows[0, 2]) == 0.0
    assert float(rows[0, 3]) == 0.0
    assert float(rows[0, 0]) > 0.0


def test_updates_percentiles_match_quantile_of_abs_grads() -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(10, 10))
    b = torch.nn.Parameter(torch.randn(50))
    a.grad, b.grad = torch.randn(10, 10), torch.randn(50)
    _, pct = _sgd_step([a, b], lr=0.01)
    allg = torch.cat([a.grad.reshape(-1), b.grad]).abs()
    torch.testing.assert_close(pct, torch.quantile(allg, torch.tensor(QUANTILES)))


def test_updates_sample_is_bounded_strided_window() -> None:
    p = torch.nn.Parameter(torch.zeros(10_000))
    p.grad = torch.ones(10_000)
    sampler = UpdateSampler([p], sample_size=1024)
    assert sampler.sizes == [1024]
    sampler.before_step()
    with torch.no_grad():
        p[::9] += 1.0  # the window is flat[0 : 9*1024 : 9]
    out = sampler.after_step()
    assert out is not None
    assert math.isclose(float(out[0][0, 0]), math.sqrt(1024), rel_tol=1e-6)
    assert sampler.after_step() is None  # the snapshot is consumed
