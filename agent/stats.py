"""Cheap per-parameter gradient statistics, reduced on the device with foreach kernels.

Everything for one step lands in ONE flat float32 device tensor laid out as
``[rows (n x 4) | grad_norm | nonfinite_grads | extra...]``; nothing here reads a value back
to the host, so the training thread never waits for the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

NCOLS = 4  # grad_norm, grad_absmax, grad_absmean, weight_norm (wire.CHEAP_FIELDS order)
INF = float("inf")
_LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclass
class _Group:
    """Tracked parameters sharing a device and dtype (one foreach launch each)."""

    device: torch.device
    params: list[Tensor]
    rows: list[int]
    """Row of each parameter in the tracked order."""
    inv_numel: Tensor
    """1/numel per parameter (float32, on the device), turns the L1 norm into mean |g|."""
    zero: Tensor
    """One-element zero in the group's dtype, standing in for a missing gradient."""


class GradStats:
    """Computes the cheap rows for a fixed list of tracked parameters."""

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
            inv = torch.tensor([1.0 / max(p.numel(), 1) for p in ps], dtype=torch.float32)
            zero = torch.zeros(1, dtype=dtype, device=device)
            self.groups.append(_Group(device, ps, rows, inv.to(device), zero))
            order.extend(rows)
        # Groups concatenate in group order; ``perm`` puts rows back in tracked order.
        self.perm: Tensor | None = None
        if order != list(range(self.n)):
            inverse = [0] * self.n
            for pos, row in enumerate(order):
                inverse[row] = pos
            self.perm = torch.tensor(inverse, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def compute(self, extra: Sequence[Tensor] = ()) -> tuple[Tensor, list[int]]:
        """Return the flat device buffer and the rows whose gradient is missing.

        ``extra`` tensors are flattened and appended after the two global scalars.
        """
        nograd: list[int] = []
        blocks: list[Tensor] = []
        for g in self.groups:
            grads: list[Tensor] = []
            for row, p in zip(g.rows, g.params, strict=True):
                grad = p.grad
                if grad is None:
                    nograd.append(row)
                    grads.append(g.zero)
                else:
                    grads.append(grad)
            # Accumulate low-precision norms in fp32; for fp32 the dtype argument only costs.
            acc = torch.float32 if g.params[0].dtype in _LOW_PRECISION else None
            l2 = _stack_f32(torch._foreach_norm(grads, 2, dtype=acc))
            amax, l1 = _absmax_l1(grads, g.device)
            w = _stack_f32(torch._foreach_norm(g.params, 2, dtype=acc))
            block = torch.stack((l2, amax, l1.mul_(g.inv_numel), w), dim=1)
            blocks.append(block if g.device == self.device else block.to(self.device))
        if not blocks:
            rows = torch.zeros((0, NCOLS), device=self.device)
        else:
            rows = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
        if self.perm is not None:
            rows = rows.index_select(0, self.perm)
        gnorm = rows[:, 0]
        scalars = [
            torch.linalg.vector_norm(gnorm).reshape(1),
            (~torch.isfinite(gnorm)).sum().to(torch.float32).reshape(1),
        ]
        scalars += [t.detach().reshape(-1).to(self.device, torch.float32) for t in extra]
        return torch.cat([rows.reshape(-1), *scalars]), sorted(nograd)


def _stack_f32(values: Sequence[Tensor]) -> Tensor:
    return torch.stack(list(values)).to(torch.float32)


def _absmax_l1(grads: list[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """max |g| and sum |g| per tensor, as float32 vectors.

    CUDA has fused multi-tensor kernels for the inf- and 1-norms. On CPU those norms fall back
    to a scalar per-tensor loop (measured ~15 ms for the 0.5M-parameter demo model, versus
    ~0.9 ms here): ``aminmax`` and ``abs().sum()`` are vectorised, and the ``abs`` temporary
    is one tensor at a time, never a copy of every gradient.
    """
    if device.type == "cuda":
        return (
            _stack_f32(torch._foreach_norm(grads, INF)),
            _stack_f32(torch._foreach_norm(grads, 1)),
        )
    extremes = torch.stack([torch.stack(torch.aminmax(x)) for x in grads]).to(torch.float32)
    absmax = extremes.abs().amax(dim=1)
    l1 = torch.stack([x.abs().sum(dtype=torch.float32) for x in grads])
    return absmax, l1


def foreach_nonfinite_counts(grads: Sequence[Tensor]) -> Tensor:
    """Exact number of NaN/Inf elements per gradient (float32, stacked on the first device)."""
    counts = [(~torch.isfinite(g)).sum().to(torch.float32) for g in grads]
    return torch.stack([c.to(grads[0].device) for c in counts])
