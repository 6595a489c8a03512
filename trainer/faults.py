"""Real training faults, injected at an exact step (``--inject KIND@STEP``).

Steps count from 1: ``freeze@50`` changes the 50th optimizer step onwards. The trainer calls
the injector at three points of every step: :meth:`FaultInjector.begin` (before the forward),
:meth:`FaultInjector.loss` (on the loss) and :meth:`FaultInjector.end` (after the optimizer step).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KINDS", "FaultInjector", "Injection", "parse_injection", "targets"]

KINDS: dict[str, str] = {
    "nan": "the loss at STEP is NaN, so every gradient is NaN (AdamW then turns weights NaN)",
    "spike": "a corrupted batch at STEP (random targets, logits x20): a loss spike far above 10x",
    "explode": "lr held at 1e4x the peak (SGD: 1e3x) from STEP on: grad norm past 100",
    "freeze": "the group blocks.1.mlp gets lr 0 from STEP: zero update, non-zero gradient",
    "bf16": "blocks.0 norm gains cast to bf16 with lr 1e-5 from STEP: updates round to zero",
    "lr_low": "every learning rate /100 from STEP on",
    "dead": "blocks.0.mlp output detached from STEP: its parameters get no gradient",
    "leak": "4 MiB of host memory retained every step from STEP on",
    "hang": "the process stops stepping at STEP (sleeps up to 1 h; SIGTERM/SIGINT end it)",
    "slow": "steps take ~3x longer from STEP on (sleep 2x the measured step time)",
}
"""Fault kinds and what each does."""

SPIKE_LOGIT_SCALE = 20.0
EXPLODE_FACTOR = 1e4
"""Adam-like steps are bounded by the lr, so it takes x1e4 to blow the grad norm past 100."""
EXPLODE_FACTOR_SGD = 1e3
"""SGD steps scale with the gradient too: x1e3 already explodes (x1e4 goes straight to NaN)."""
LR_LOW_FACTOR = 1e-2
BF16_LR = 1e-5
LEAK_BYTES = 4 << 20
HANG_SECONDS = 3600.0
SLOW_FACTOR = 3.0


@dataclass(frozen=True)
class Injection:
    """One fault: ``kind`` takes effect at optimizer step ``step`` (counted from 1)."""

    kind: str
    step: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.step < 1:
            raise ValueError(f"fault step must be >= 1, got {self.step}")

    def __str__(self) -> str:
        return f"{self.kind}@{self.step}"


def parse_injection(text: str) -> Injection:
    """Parse ``KIND@STEP`` (e.g. ``freeze@50``); raises ``ValueError`` with a readable message."""
    kind, sep, step = text.partition("@")
    if not sep or not kind or not step:
        raise ValueError(f"expected KIND@STEP (e.g. nan@100), got {text!r}")
    try:
        n = int(step)
    except ValueError:
        raise ValueError(f"step in {text!r} must be an integer, got {step!r}") from None
    return Injection(kind.strip().lower(), n)


def _frozen_block(model: nn.Module) -> int:
    return min(1, len(model.blocks) - 1)  # type: ignore[arg-type]


def _target_module(kind: str, model: nn.Module) -> str | None:
    if kind == "freeze":
        return f"blocks.{_frozen_block(model)}.mlp"
    if kind == "bf16":
        return "blocks.0.norm"
    if kind == "dead":
        return "blocks.0.mlp"
    return None


def targets(kind: str, model: nn.Module) -> list[str]:
    """Names of the parameters ``kind`` acts on; empty for faults of the whole run.

    ``dead`` also names ``blocks.0.ln2.weight``: its output only feeds the detached MLP, so it
    loses its gradient too.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}")
    names = [n for n, _ in model.named_parameters()]
    if kind == "freeze":
        return [n for n in names if n.startswith(f"blocks.{_frozen_block(model)}.mlp.")]
    if kind == "bf16":
        return [n for n in names if n.startswith(("blocks.0.ln1.", "blocks.0.ln2."))]
    if kind == "dead":
        return [n for n in names if n.startswith(("blocks.0.mlp.", "blocks.0.ln2."))]
    if kind in ("nan", "spike", "explode", "lr_low"):
        return names
    return []


@dataclass
class FaultInjector:
    """Applies the scheduled faults to one model and optimizer; keeps counters tests can read."""

    injections: list[Injection]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    sleep: Callable[[float], None] = time.sleep
    """How to sleep (``hang``, ``slow``); tests pass a recorder."""
    log: Callable[[str], None] = print
    active: set[str] = field(default_factory=set)
    """Kinds that have taken effect."""
    leaked: list[torch.Tensor] = field(default_factory=list)
    hang_reached: bool = False
    slow_sleeps: int = 0
    slept_s: float = 0.0

    @property
    def leaked_bytes(self) -> int:
        """Bytes held by the ``leak`` fault."""
        return sum(t.numel() * t.element_size() for t in self.leaked)

    def _group(self, name: str) -> dict[str, Any]:
        for g in self.optimizer.param_groups:
            if g.get("name") == name:
                return g
        raise ValueError(f"optimizer has no param group named {name!r}")

    def _announce(self, inj: Injection, what: str) -> None:
        self.active.add(inj.kind)
        self.log(f"inject {inj}: {what.replace('STEP', f'step {inj.step}')}")

    def begin(self, step: int) -> None:
        """Start the faults scheduled for ``step``; call before the forward and lr schedule."""
        for inj in self.injections:
            if inj.step == step:
                self._start(inj)

    def _start(self, inj: Injection) -> None:
        kind = inj.kind
        module = _target_module(kind, self.model)
        names = ", ".join(targets(kind, self.model))
        if kind == "explode" or kind == "lr_low":
            factor = LR_LOW_FACTOR
            if kind == "explode":
                sgd = isinstance(self.optimizer, torch.optim.SGD)
                factor = EXPLODE_FACTOR_SGD if sgd else EXPLODE_FACTOR
            for g in self.optimizer.param_groups:
                g["lr_scale"] *= factor
                # A lost schedule: the exploded lr holds at factor x peak, not x a decayed value.
                g["unscheduled"] = g.get("unscheduled", False) or kind == "explode"
            what = "peak lr" if kind == "explode" else "lr"
            self._announce(inj, f"{what} x{factor:g} for all groups")
        elif kind == "freeze":
            assert module is not None
            self._group(module)["lr_scale"] = 0.0
            self._announce(inj, f"lr 0 for group {module} ({names})")
        elif kind == "bf16":
            assert module is not None
            group = self._group(module)
            for p in group["params"]:
                p.data = p.data.to(torch.bfloat16)
                self.optimizer.state.pop(p, None)  # moments in the old dtype no longer fit
            group.update(base_lr=BF16_LR, lr_scale=1.0)
            self._announce(inj, f"bf16 params, lr {BF16_LR:g} for group {module} ({names})")
        elif kind == "dead":
            assert module is not None
            self.model.get_submodule(module).register_forward_hook(_detach_output)
            self._announce(inj, f"output of {module} detached ({names} get no grad)")
        elif kind == "hang":
            self.hang_reached = True
            self._announce(inj, f"hanging for up to {HANG_SECONDS:.0f} s")
            self.sleep(HANG_SECONDS)
        else:  # nan, spike, leak, slow act inside the step
            self._announce(inj, KINDS[kind])

    def loss(
        self, step: int, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> torch.Tensor:
        """Return the loss to backpropagate at ``step`` (changed only by ``nan`` and ``spike``)."""
        for inj in self.injections:
            if inj.step != step:
                continue
            if inj.kind == "nan":
                loss = loss * float("nan")
            elif inj.kind == "spike":
                # A corrupted batch (random targets) on confident, sharpened logits.
                gen = torch.Generator().manual_seed(step)
                bad = torch.randint(0, logits.size(-1), targets.shape, generator=gen)
                scaled = logits * SPIKE_LOGIT_SCALE
                loss = F.cross_entropy(scaled.view(-1, logits.size(-1)), bad.view(-1))
        return loss

    def end(self, step: int, step_seconds: float) -> None:
        """Apply the per-step faults (``leak``, ``slow``) after the optimizer step."""
        for inj in self.injections:
            if step < inj.step:
                continue
            if inj.kind == "leak":
                self.leaked.append(torch.ones(LEAK_BYTES // 4))  # ones: pages really touched
            elif inj.kind == "slow":
                extra = (SLOW_FACTOR - 1.0) * step_seconds
                self.slow_sleeps += 1
                self.slept_s += extra
                self.sleep(extra)


def _detach_output(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    return output.detach()
