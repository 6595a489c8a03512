"""Real training faults, injected at an exact step on every rank or one (``--inject``).

``KIND@STEP`` hits every rank; ``KIND@STEP:rank=R`` only rank ``R`` of a torchrun job. Steps
count from 1: ``freeze@50`` changes the 50th optimizer step onwards. This module holds the
vocabulary (kinds, their constants, which parameters each acts on); the
:class:`~gradwatch.trainer.injector.FaultInjector` applies them inside the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["KINDS", "Injection", "parse_injection", "targets"]

KINDS: dict[str, str] = {
    "nan": "the loss at STEP is NaN, so every gradient is NaN (AdamW then turns weights NaN)",
    "spike": "a corrupted batch at STEP (random targets, logits x20): a loss spike far above 10x",
    "explode": "lr held at 1e4x the peak (SGD: 1e3x) from STEP on: grad norm past 100",
    "freeze": "the group blocks.1.mlp gets lr 0 from STEP: zero update, non-zero gradient",
    "bf16": "blocks.0 norm gains cast to bf16 with lr 1e-5 from STEP: updates round to zero "
    "(not under torchrun: DDP cannot change a dtype)",
    "lr_low": "every learning rate /100 from STEP on",
    "dead": "blocks.0.mlp output detached from STEP: its parameters get no gradient",
    "leak": "4 MiB of host memory retained every step from STEP on",
    "hang": "the rank stops before backward at STEP (sleeps up to 1 h; SIGTERM/SIGINT end it); "
    "under torchrun the other ranks wait in all-reduce",
    "slow": "from STEP the data phase sleeps 2x the measured step time: steps ~3x longer "
    "(under torchrun: a straggler rank)",
    "raise": "RuntimeError at STEP: the rank crashes (under torchrun the job fails)",
    "oom": "before backward at STEP the rank asks for 1 PiB: out of memory (CUDA: "
    "torch.OutOfMemoryError; CPU: the allocator's error), the rank crashes",
    "desync": "after the optimizer step at STEP every weight gets 1e-2 x randn, never resynced: "
    "DDP replicas silently diverge",
    "long_eval": "the first evaluation at or after STEP lasts 5 s longer (declared as phase "
    "eval: expected, not a stall); use with --eval-every",
    "overfit": "from STEP every step trains on the batch of STEP again: train loss falls, "
    "val loss rises",
    "plateau": "from STEP every lr glides down (x0.7 a step, no jump) to 1e-3x: "
    "the loss stops improving",
    "vanish": "gradients of every block but the last x1e-4 after backward from STEP on: "
    "the first block's grad norm far below 1% of the last's",
    "ratio_high": "group blocks.0.attn lr held at 100x the peak from STEP, its weights held at "
    "their norm: update/weight ratio above 0.1 (no NaN)",
    "ratio_low": "group blocks.0.attn lr x3e-7 from STEP: update/weight ratio in (1e-12, 1e-7)",
    "weight_jump": "blocks.0.mlp.fc.weight multiplied by 20 at STEP: its weight norm jumps 20x",
    "mem_pressure": "from STEP host memory (CUDA: device memory) is taken in 5 steps up to 97% "
    "of --memory-limit (required)",
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
OOM_BYTES = 1 << 50
"""What ``oom`` asks for: more than any device or host has, refused at once (no paging)."""
LONG_EVAL_SECONDS = 5.0
DESYNC_STD = 1e-2
OVERFIT_BATCHES = 1
PLATEAU_DECAY = 0.7
"""Per-step lr factor of ``plateau``: a change under lr_sanity's 1.5x jump, so a smooth decay."""
PLATEAU_FLOOR = 1e-3
VANISH_SCALE = 1e-4
"""Adam's steps barely change (the gradients stay far above its eps): only the norms vanish."""
RATIO_HIGH_FACTOR = 100.0
RATIO_LOW_FACTOR = 3e-7
WEIGHT_JUMP_FACTOR = 20.0
MEM_PRESSURE_FILL = 0.97
"""``mem_pressure`` fills memory in use up to this fraction of ``--memory-limit``."""
MEM_PRESSURE_STEPS = 5


@dataclass(frozen=True)
class Injection:
    """One fault: ``kind`` takes effect at optimizer step ``step`` (counted from 1), on
    ``rank`` only, or on every rank when ``rank`` is None."""

    kind: str
    step: int
    rank: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.step < 1:
            raise ValueError(f"fault step must be >= 1, got {self.step}")
        if self.rank is not None and self.rank < 0:
            raise ValueError(f"fault rank must be >= 0, got {self.rank}")

    def hits(self, rank: int) -> bool:
        """Whether this fault acts on ``rank``."""
        return self.rank is None or self.rank == rank

    def __str__(self) -> str:
        where = "" if self.rank is None else f":rank={self.rank}"
        return f"{self.kind}@{self.step}{where}"


def parse_injection(text: str) -> Injection:
    """Parse ``KIND@STEP[:rank=R]`` (e.g. ``freeze@50``, ``hang@100:rank=1``); raises
    ``ValueError`` with a readable message."""
    kind, sep, rest = text.partition("@")
    step, colon, option = rest.partition(":")
    if not sep or not kind or not step:
        raise ValueError(f"expected KIND@STEP[:rank=R] (e.g. nan@100), got {text!r}")
    try:
        n = int(step)
    except ValueError:
        raise ValueError(f"step in {text!r} must be an integer, got {step!r}") from None
    rank: int | None = None
    if colon:
        key, eq, value = option.partition("=")
        if key.strip() != "rank" or not eq:
            raise ValueError(f"expected :rank=R after the step in {text!r}, got {option!r}")
        try:
            rank = int(value)
        except ValueError:
            raise ValueError(f"rank in {text!r} must be an integer, got {value!r}") from None
    return Injection(kind.strip().lower(), n, rank)


def frozen_block(model: nn.Module) -> int:
    """The block whose MLP ``freeze`` stops (the second, or the only one)."""
    return min(1, len(model.blocks) - 1)  # type: ignore[arg-type]


TARGET_GROUP: dict[str, str] = {
    "bf16": "blocks.0.norm",
    "dead": "blocks.0.mlp",
    "ratio_high": "blocks.0.attn",
    "ratio_low": "blocks.0.attn",
}
"""The named module (optimizer group) a fault acts on; ``freeze`` depends on the depth."""
WEIGHT_JUMP_PARAM = "blocks.0.mlp.fc.weight"


def target_module(kind: str, model: nn.Module) -> str | None:
    """The module (and optimizer group) ``kind`` acts on, or None."""
    if kind == "freeze":
        return f"blocks.{frozen_block(model)}.mlp"
    return TARGET_GROUP.get(kind)


def targets(kind: str, model: nn.Module) -> list[str]:
    """Names of the parameters ``kind`` acts on; empty for faults of the whole process.

    ``dead`` also names ``blocks.0.ln2.weight``: its output only feeds the detached MLP, so it
    loses its gradient too. ``bf16`` names the block's two norm gains.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}")
    names = [n for n, _ in model.named_parameters()]
    if kind == "bf16":
        return [n for n in names if n.startswith(("blocks.0.ln1.", "blocks.0.ln2."))]
    if kind == "dead":
        return [n for n in names if n.startswith(("blocks.0.mlp.", "blocks.0.ln2."))]
    module = target_module(kind, model)
    if module is not None:
        return [n for n in names if n.startswith(f"{module}.")]
    if kind == "weight_jump":
        return [WEIGHT_JUMP_PARAM]
    if kind == "vanish":
        last = len(model.blocks) - 1  # type: ignore[arg-type]
        early = tuple(f"blocks.{i}." for i in range(last))
        return [n for n in names if n.startswith(early)]
    if kind in ("nan", "spike", "explode", "lr_low", "desync", "plateau"):
        return names
    return []
