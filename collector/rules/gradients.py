"""Gradient rules: grad_explosion, vanishing_gradients, dead_parameters."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from gradwatch.wire import metrics as m

from ..params import Bools, Ints
from ..state import RankState
from .base import (
    Finding,
    Rule,
    RuleSettings,
    finite,
    fmt,
    median,
    name_list,
    sticky,
)


def global_grad_norm(rank: RankState) -> float | None:
    """The agent's global norm, else the root sum of squares of the per-parameter norms."""
    if rank.stats is None:
        return None
    value = rank.stats.metrics.get(m.GRAD_NORM)
    grads = rank.columns.get("grad_norm")
    if value is None and grads is not None and len(grads):
        value = math.sqrt(sum(x * x for x in grads.tolist()))
    return value


@dataclass(frozen=True)
class GradExplosionSettings(RuleSettings):
    max_norm: float = 100.0
    """Global gradient norm above this is an explosion."""
    ratio: float = 10.0
    """So is a norm above this multiple of the running median."""
    window: int = 50
    """Frames in the running median."""
    min_history: int = 25
    """Frames needed before the median test (early training is spiky)."""


@dataclass
class GradExplosionMemory:
    norms: deque[float] = field(default_factory=deque)
    parameter: str | None = None


class GradExplosion(Rule[GradExplosionSettings, GradExplosionMemory]):
    """The global gradient norm exceeds ``max_norm`` or ``ratio`` times its running median.

    One alert per rank (the norm is global); the message names the parameter with the largest
    gradient norm. What to do: enable gradient clipping
    (max_norm=1.0), lower the LR about 10x, check long sequences and the loss scale.
    """

    name = "grad_explosion"
    severity = "error"
    action = "enable gradient clipping (max_norm=1.0) and lower the LR ~10x"
    settings_type = GradExplosionSettings

    def new_memory(self) -> GradExplosionMemory:
        return GradExplosionMemory(deque(maxlen=self.settings.window))

    def check(self, rank: RankState, memory: GradExplosionMemory) -> list[Finding] | None:
        norm = global_grad_norm(rank)
        if norm is None or not math.isfinite(norm):
            return None
        s = self.settings
        limit = s.max_norm
        if len(memory.norms) >= s.min_history:
            limit = min(limit, s.ratio * median(memory.norms))
        if norm <= limit:
            memory.norms.append(norm)
            memory.parameter = None
            return []
        grads = rank.columns.get("grad_norm")
        column = [] if grads is None else grads.tolist()
        ranked = sorted(
            (i for i in range(len(column)) if finite(column[i])), key=lambda i: -column[i]
        )
        memory.parameter = sticky(memory.parameter, [rank.names[i] for i in ranked[:3]])
        where = f"; largest in {memory.parameter}" if memory.parameter else ""
        return [
            self.finding(
                f"global gradient norm {fmt(norm)} exceeds {fmt(limit)}{where}",
                value=norm,
                threshold=limit,
            )
        ]


@dataclass(frozen=True)
class VanishingSettings(RuleSettings):
    for_checks: int = 10
    min_norm: float = 1e-7
    """Global gradient norm below this has vanished."""
    layer_ratio: float = 0.01
    """First block's gradient norm below this fraction of the last block's."""


class VanishingGradients(Rule[VanishingSettings, None]):
    """Gradients vanish: global norm below ``min_norm``, or first block below 1% of the last.

    Blocks are found from names like ``blocks.N.`` / ``layers.N.``; sustained for
    ``for_checks`` frames. What to do: raise the LR, check residual connections and
    normalisation, reduce depth or fix the initialisation.
    """

    name = "vanishing_gradients"
    severity = "warning"
    action = "raise the LR; check residual connections, normalisation and initialisation"
    settings_type = VanishingSettings
    sheddable = True

    def new_memory(self) -> None:
        return None

    def check(self, rank: RankState, memory: None) -> list[Finding] | None:
        norm = global_grad_norm(rank)
        if norm is None or not math.isfinite(norm):
            return None
        s = self.settings
        if norm < s.min_norm:
            msg = f"global gradient norm {fmt(norm)} is below {fmt(s.min_norm)}"
            return [self.finding(msg, value=norm, threshold=s.min_norm)]
        table, grads = rank.table, rank.columns.get("grad_norm")
        if grads is None or table.layer_count < 2 or len(grads) != len(table):
            return []
        use = table.has_layer & np.isfinite(grads)
        layers = table.layer[use]
        present = np.flatnonzero(np.bincount(layers, minlength=table.layer_count))
        if len(present) < 2:
            return []
        g = grads[use]
        squares = np.bincount(layers, weights=g * g, minlength=table.layer_count)
        low, high = int(present[0]), int(present[-1])
        first, last = math.sqrt(squares[low]), math.sqrt(squares[high])
        if last > 0 and first / last < s.layer_ratio:
            return [
                self.finding(
                    f"block {low} gradient norm {fmt(first)} is "
                    f"{first / last:.2e} of block {high}'s {fmt(last)}",
                    value=first / last,
                    threshold=s.layer_ratio,
                )
            ]
        return []


@dataclass(frozen=True)
class DeadSettings(RuleSettings):
    window: int = 8
    """Consecutive sampled steps with a zero or missing gradient."""
    topk: int = 5
    """How many parameters the message names."""


@dataclass
class DeadMemory:
    streak: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Consecutive zero or missing gradients, per row."""
    alive_before: Bools = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    """The row had a finite non-zero gradient at some point."""
    since: dict[str, int] = field(default_factory=dict)
    """Step of the first zero or missing gradient of each parameter's current streak."""
    parameter: str | None = None


class DeadParameters(Rule[DeadSettings, DeadMemory]):
    """A parameter that had gradients now gets exactly zero (or none) for ``window`` steps.

    Typical causes: a detached branch, a dead ReLU layer, a parameter dropped from the graph,
    a mask that zeroes everything. What to do: check that the module is still used in
    forward, that nothing calls ``.detach()`` on its path, and its activations.
    """

    name = "dead_parameters"
    severity = "error"
    action = "check the module is still in the forward graph (no detach, no zero mask)"
    settings_type = DeadSettings
    sheddable = True

    def new_memory(self) -> DeadMemory:
        return DeadMemory()

    def check(self, rank: RankState, memory: DeadMemory) -> list[Finding] | None:
        grads = rank.columns.get("grad_norm")
        if rank.stats is None or grads is None:
            return None
        n, step = len(grads), rank.stats.step
        if len(memory.streak) != n:
            memory.streak = np.zeros(n, dtype=np.int64)
            memory.alive_before = np.zeros(n, dtype=np.bool_)
        zero = grads == 0.0
        if rank.stats.nograd:
            zero[list(rank.stats.nograd)] = True
        for i in np.flatnonzero(zero & (memory.streak == 0)).tolist():
            memory.since[rank.names[i]] = step
        memory.streak = np.where(zero, memory.streak + 1, 0)
        memory.alive_before |= ~zero & np.isfinite(grads)
        rows = np.flatnonzero(memory.alive_before & (memory.streak >= self.settings.window))
        dead = [rank.names[i] for i in rows.tolist()]
        memory.parameter = sticky(memory.parameter, dead)
        if not dead or memory.parameter is None:
            return []
        return [
            self.finding(
                f"gradient zero or missing for {self.settings.window}+ sampled steps after "
                f"being non-zero: {name_list(dead, self.settings.topk)}",
                parameter=memory.parameter,
                value=0.0,
                threshold=0.0,
                onset=memory.since.get(memory.parameter),
            )
        ]
