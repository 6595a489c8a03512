"""Sampled update snapshot for full steps: update norm/ratio, unchanged and underflow fractions.

Each tracked parameter contributes a fixed strided window of at most ``sample_size`` elements
(``flat[0 : stride * k : stride]``, a view: no index tensors are kept). The optimizer step
pre-hook copies the sampled weights; the post-hook samples the gradients (still in place after
``step()``; a closure-style step such as Lightning's only computes them inside ``step()``) and
compares. All on the device.

``underflow_frac`` is derived from the *observed* change: for bf16/fp16 parameters it is the
fraction of sampled elements with a non-zero gradient whose stored value did not change, i.e.
whose update was below half an ULP and rounded away (the optimizer's intended fp32 update is
not visible generically). fp32/fp64 parameters always report 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradwatch.wire.metrics import GRAD_PERCENTILES

NCOLS = 4  # update_norm, update_ratio, unchanged_frac, underflow_frac (wire.FULL_FIELDS order)
QUANTILES = tuple(p / 100 for p in GRAD_PERCENTILES)
"""The |g| quantiles sent on full steps (``wire.metrics.GRAD_PERCENTILES`` as fractions)."""
_MAX_QUANTILE_INPUT = 1 << 24  # torch.quantile's input limit
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _window(p: Tensor, k: int, stride: int) -> Tensor:
    flat = p.detach().reshape(-1)
    return flat[0 : stride * k : stride]


class UpdateSampler:
    """Snapshots sampled weights before the step and reduces the change after it."""

    def __init__(self, params: Sequence[Tensor], sample_size: int) -> None:
        self.params = list(params)
        self.device = self.params[0].device if self.params else torch.device("cpu")
        self.sizes: list[int] = []
        self.strides: list[int] = []
        for p in self.params:
            k = min(p.numel(), sample_size)
            self.sizes.append(k)
            self.strides.append(max(p.numel() // max(k, 1), 1))
        lowp = [1.0 if p.dtype in _LOW_PRECISION else 0.0 for p in self.params]
        self.lowp = torch.tensor(lowp, dtype=torch.float32, device=self.device)
        self.q = torch.tensor(QUANTILES, dtype=torch.float32, device=self.device)
        self.lengths = torch.tensor(self.sizes, dtype=torch.long, device=self.device)
        self._before: Tensor | None = None

    def _gather(self, tensors: Sequence[Tensor | None]) -> Tensor:
        parts = []
        for t, k, s in zip(tensors, self.sizes, self.strides, strict=True):
            if t is None:
                parts.append(torch.zeros(k, dtype=torch.float32, device=self.device))
            else:
                parts.append(_window(t, k, s).to(self.device, torch.float32))
        if not parts:
            return torch.zeros(0, device=self.device)
        return torch.cat(parts)

    def _segment_sum(self, values: Tensor) -> Tensor:
        """Per-parameter sums of a gathered sample in one kernel (the CPU 1-norm is slow)."""
        return torch.segment_reduce(values, "sum", lengths=self.lengths)

    @torch.no_grad()
    def before_step(self) -> None:
        """Copy the sampled weights (optimizer step pre-hook)."""
        self._before = self._gather(self.params)

    @torch.no_grad()
    def after_step(self) -> tuple[Tensor, Tensor] | None:
        """Return ``(full rows (n x 4), six |g| percentiles)`` or None without a snapshot."""
        before, self._before = self._before, None
        if before is None or not self.params:
            return None
        grads = self._gather([p.grad for p in self.params])
        after = self._gather(self.params)
        delta = after.sub_(before)
        f32 = torch.float32
        d_parts = torch.split(delta, self.sizes)
        w_parts = torch.split(before, self.sizes)
        update_norm = torch.stack(torch._foreach_norm(d_parts, 2, dtype=f32))
        weight_norm = torch.stack(torch._foreach_norm(w_parts, 2, dtype=f32))
        ratio = update_norm / weight_norm.clamp_min(1e-30)
        moving = grads != 0
        unchanged = (delta == 0).logical_and_(moving).to(f32)
        n_unchanged = self._segment_sum(unchanged)
        n_moving = self._segment_sum(moving.to(f32))
        unchanged_frac = n_unchanged / n_moving.clamp_min(1.0)
        underflow_frac = unchanged_frac * self.lowp
        rows = torch.stack((update_norm, ratio, unchanged_frac, underflow_frac), dim=1)
        absg = grads.abs_()
        if absg.numel() > _MAX_QUANTILE_INPUT:
            absg = absg[:: absg.numel() // _MAX_QUANTILE_INPUT + 1]
        if absg.numel() == 0:
            return rows, torch.zeros(len(QUANTILES), device=self.device)
        return rows, torch.quantile(absg, self.q)
