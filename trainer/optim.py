"""Named per-module parameter groups, the optimizers, and the warmup + cosine schedule.

Every group carries three extra keys the trainer and the fault injector use:
``name`` (e.g. ``blocks.1.mlp``, shown in alerts), ``base_lr`` (peak lr of the schedule) and
``lr_scale`` (a multiplier faults change: 0 freezes a group, 1e4 explodes it), and the
optional ``unscheduled`` (the schedule's warmup/decay factor no longer applies).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = [
    "OPTIMIZERS",
    "DEFAULT_LR",
    "DEFAULT_WARMUP",
    "MuonAdamW",
    "build_optimizer",
    "lr_factor",
    "param_groups",
    "set_lrs",
]

OPTIMIZERS = ("adamw", "muon", "sgd")
DEFAULT_LR = {"adamw": 3e-3, "muon": 0.02, "sgd": 0.1}
"""Peak learning rate per optimizer that trains the demo preset smoothly (Muon: hidden matrices)."""
DEFAULT_WARMUP = {"adamw": 50, "muon": 50, "sgd": 150}
"""Warmup steps per optimizer: SGD's grad norm flares up (20-70) with a short warmup."""


def _group_name(param_name: str) -> str:
    """``blocks.1.mlp.fc.weight`` -> ``blocks.1.mlp``; ``blocks.0.ln1.weight`` -> ``blocks.0.norm``.

    ``tok_emb.weight`` -> ``tok_emb`` (and likewise ``pos_emb``, ``ln_f``, ``head``).
    """
    parts = param_name.split(".")
    if parts[0] == "blocks":
        sub = parts[2]
        return f"blocks.{parts[1]}.{'norm' if sub.startswith('ln') else sub}"
    return parts[0]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """One named group per module (``tok_emb``, ``blocks.N.attn|mlp|norm``, ``ln_f``, ``head``).

    Only >= 2-D weights decay; the model has no biases, so every group is all-decay or no-decay.
    """
    groups: dict[str, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        gname = _group_name(name)
        g = groups.setdefault(
            gname,
            {"name": gname, "params": [], "param_names": [], "weight_decay": 0.0},
        )
        g["params"].append(p)
        g["param_names"].append(name)
        if p.dim() >= 2:
            g["weight_decay"] = weight_decay
    for g in groups.values():
        if {p.dim() >= 2 for p in g["params"]} == {True, False}:
            raise ValueError(f"group {g['name']} mixes matrices and vectors")
    return list(groups.values())


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the hidden matrices, AdamW for embeddings, head and norms, as ONE optimizer.

    One optimizer means one set of step hooks, so ``gradwatch.agent.watch`` sees every parameter.
    The two inner optimizers share this optimizer's group dicts and its ``state``.
    """

    def __init__(
        self,
        groups: Iterable[dict[str, Any]],
        *,
        muon_lr: float,
        adamw_lr: float,
        betas: tuple[float, float] = (0.9, 0.95),
    ) -> None:
        groups = list(groups)
        muon_groups = [
            g
            for g in groups
            if g["name"].startswith("blocks.") and all(p.dim() == 2 for p in g["params"])
        ]
        adam_groups = [g for g in groups if g not in muon_groups]
        for g in muon_groups:
            g.update(base_lr=muon_lr, lr=muon_lr)
        for g in adam_groups:
            g.update(base_lr=adamw_lr, lr=adamw_lr)
        self.muon = torch.optim.Muon(muon_groups, lr=muon_lr, adjust_lr_fn="original")
        self.adamw = torch.optim.AdamW(adam_groups, lr=adamw_lr, betas=betas)
        super().__init__(self.muon.param_groups + self.adamw.param_groups, defaults={})
        self.muon.state = self.adamw.state = self.state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Step both inner optimizers."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()  # type: ignore[no-untyped-call]
        self.adamw.step()
        return loss


def build_optimizer(
    name: str,
    model: nn.Module,
    *,
    lr: float | None = None,
    aux_lr: float = 3e-3,
    weight_decay: float = 0.1,
) -> torch.optim.Optimizer:
    """Build ``adamw``, ``muon`` (hybrid with AdamW at ``aux_lr``) or ``sgd`` (momentum 0.9)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    peak = DEFAULT_LR[name] if lr is None else lr
    groups = param_groups(model, weight_decay)
    for g in groups:
        g.update(base_lr=peak, lr_scale=1.0)
    opt: torch.optim.Optimizer
    if name == "adamw":
        opt = torch.optim.AdamW(groups, lr=peak, betas=(0.9, 0.95))
    elif name == "muon":
        opt = MuonAdamW(groups, muon_lr=peak, adamw_lr=aux_lr)
    else:
        # SGD's decay is coupled (lr * wd * w); 1e-4 keeps it at the usual strength.
        for g in groups:
            g["weight_decay"] = 1e-4 if g["weight_decay"] else 0.0
        opt = torch.optim.SGD(groups, lr=peak, momentum=0.9)
    return opt


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``.

    ``step`` counts from 1, so the first step already trains at ``1 / warmup`` of the peak.
    """
    if step <= warmup:
        return step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lrs(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's lr to ``base_lr * lr_scale * factor`` (``factor`` 1 if ``unscheduled``)."""
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * g["lr_scale"] * (1.0 if g.get("unscheduled") else factor)
