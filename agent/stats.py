"""Per-parameter gradient and weight statistics, reduced on the device without a host sync.

Two cadences (seed 001's logging table: gradient norm every step, per-layer weights every
100-1000 steps):

- :meth:`GradStats.norms`, every sampled step: the L2 norm of every tracked gradient, one fused
  ``torch._foreach_norm`` per (device, dtype) group. A NaN/Inf norm flags a non-finite gradient;
  the global norm follows on the host. This is one read of the gradients, the least any
  per-parameter statistic can cost.
- :meth:`GradStats.details`, on full steps: max |g|, mean |g| and the weight L2 norm. CUDA has
  fused multi-tensor kernels for the inf- and 1-norms; on CPU those take a slow scalar path, so
  each gradient is reduced on its own (``abs`` then ``amax``/``sum``, in chunks for big tensors).

Nothing here reads a value back to the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

DETAIL_COLS = 3  # grad_absmax, grad_absmean, weight_norm (their wire.FULL_FIELDS order)
CHUNK = 1 << 20
"""CPU: a gradient is read in chunks of this many elements on full steps, so the ``abs``
temporary never exceeds 4 MiB whatever the parameter's size."""
_LOW_PRECISION = (torch.bfloat16, torch.float16)
_F32 = torch.float32
F32_EXACT = 1 << 24
"""float32 holds every integer up to this exactly."""


@dataclass
class _Group:
    """Tracked parameters sharing a device and dtype."""

    device: torch.device
    params: list[Tensor]
    rows: list[int]
    """Row of each parameter in the tracked order."""
    inv_numel: Tensor
    """1/numel per parameter (float32, on the device), turns sum |g| into mean |g|."""
    zero: Tensor
    """One-element zero in the group's dtype, standing in for a missing gradient."""
    acc: torch.dtype | None
    """Accumulation dtype: float32 for bf16/fp16, else the tensors' own."""


class GradStats:
    """Reduces a fixed list of tracked parameters into float32 device tensors."""

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.params = list(params)
        self.n = len(self.params)
        self.device = self.params[0].device if self.params else torch.device("cpu")
        by_key: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(self.params):
            by_key.setdefault((p.device, p.dtype), []).append(i)
        self.groups: list[_Group] = []
        order: list[int] = []
        for (device, dtype), rows in by_key.items():
            ps = [self.params[i] for i in rows]
            inv = torch.tensor([1.0 / max(p.numel(), 1) for p in ps], dtype=_F32, device=device)
            zero = torch.zeros(1, dtype=dtype, device=device)
            acc = _F32 if dtype in _LOW_PRECISION else None
            self.groups.append(_Group(device, ps, rows, inv, zero, acc))
            order.extend(rows)
        self.all_cpu = all(g.device.type == "cpu" for g in self.groups)
        """Every group on the CPU: norms go to the sender thread as the kernel returned them."""
        # Groups concatenate in group order; ``perm`` puts rows back in tracked order.
        self.perm: Tensor | None = None
        self.order_inverse: list[int] = []
        if order != list(range(self.n)):
            inverse = [0] * self.n
            for pos, row in enumerate(order):
                inverse[row] = pos
            self.perm = torch.tensor(inverse, dtype=torch.long, device=self.device)
            self.order_inverse = inverse

    def _grads(self, g: _Group, nograd: list[int] | None) -> list[Tensor]:
        grads: list[Tensor] = []
        for row, p in zip(g.rows, g.params, strict=True):
            grad = p.grad
            if grad is None:
                if nograd is not None:
                    nograd.append(row)
                grads.append(g.zero)
            else:
                grads.append(grad)
        return grads

    def _tracked_order(self, blocks: list[Tensor]) -> Tensor:
        blocks = [b if b.device == self.device else b.to(self.device) for b in blocks]
        out = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
        return out if self.perm is None else out.index_select(0, self.perm)

    def norms(self) -> tuple[list[Tensor], list[int]]:
        """Return the gradient L2 norms and the rows whose gradient is None (norm 0).

        The norms come as parts whose flattened concatenation is the ``(n,)`` float32 vector in
        tracked order: on CPU the fused kernel's n scalars as they are (the sender thread reads
        them; packing them would be one more op on the training thread), elsewhere one tensor.
        Call under ``torch.no_grad()`` when gradients may require grad (``create_graph``).
        """
        if not self.groups:
            return [], []
        nograd: list[int] = []
        per_group = [
            torch._foreach_norm(self._grads(g, nograd), 2, dtype=g.acc) for g in self.groups
        ]
        nograd.sort()
        if self.all_cpu:
            flat = [t for norms in per_group for t in norms]
            if self.perm is not None:
                flat = [flat[i] for i in self.order_inverse]
            return flat, nograd
        blocks = [torch.stack(norms).to(_F32) for norms in per_group]
        return [self._tracked_order(blocks)], nograd

    def nonfinite_counts(self, rows: Sequence[int]) -> Tensor:
        """Exact NaN/Inf element counts of the gradients of ``rows`` (0 without one), as
        float32 ``(high, low)`` pairs of base 2**24 so that any count stays exact."""
        counts = [
            torch.zeros((), dtype=torch.long, device=self.device)
            if (g := self.params[i].grad) is None
            else torch.isfinite(g).logical_not_().sum().to(self.device)
            for i in rows
        ]
        c = torch.stack(counts)
        return torch.stack((c // F32_EXACT, c % F32_EXACT), dim=1).to(_F32)

    @torch.no_grad()
    def details(self) -> Tensor:
        """Return ``(n, 3)`` float32: max |g|, mean |g| (0 without a gradient), weight L2 norm."""
        if not self.groups:
            return torch.zeros((0, DETAIL_COLS), device=self.device)
        blocks = []
        for g in self.groups:
            grads = self._grads(g, None)
            w = torch.stack(torch._foreach_norm(g.params, 2, dtype=g.acc))
            if g.device.type == "cuda":
                amax = torch.stack(torch._foreach_norm(grads, float("inf")))
                l1 = torch.stack(torch._foreach_norm(grads, 1, dtype=g.acc))
            else:
                pairs = [_abs_max_sum(t) for t in grads]
                amax = torch.stack([a for a, _ in pairs])
                l1 = torch.stack([s for _, s in pairs])
            cols = (amax.to(_F32), l1.to(_F32) * g.inv_numel, w.to(_F32))
            blocks.append(torch.stack(cols, dim=1))
        return self._tracked_order(blocks)


def _abs_max_sum(t: Tensor) -> tuple[Tensor, Tensor]:
    """max |t| and sum |t| (float32) of one tensor, without a temporary over 4 MiB."""
    if t.numel() == 0:
        zero = torch.zeros((), dtype=_F32, device=t.device)
        return zero, zero
    if t.numel() <= CHUNK:
        a = t.abs()
        return a.amax(), a.sum(dtype=_F32)
    lo, hi = torch.aminmax(t)
    parts = [c.abs().sum(dtype=_F32) for c in torch.split(t.reshape(-1), CHUNK)]
    return torch.maximum(lo.abs(), hi.abs()), torch.stack(parts).sum()
