"""Update rules: update_ratio_high, update_ratio_low, weight_norm_spike."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..params import LOW_PRECISION, Floats
from ..state import RankState
from .base import (
    Finding,
    Rule,
    RuleSettings,
    fmt,
    name_list,
    sticky,
)

__all__ = ["LOW_PRECISION", "dtypes", "is_full_step", "numels"]


def is_full_step(rank: RankState) -> bool:
    return rank.stats is not None and rank.full_step == rank.stats.step and bool(rank.full_columns)


def dtypes(rank: RankState) -> list[str]:
    """Dtype of each tracked parameter, in row order."""
    return rank.table.dtypes


def numels(rank: RankState) -> list[int]:
    """Element count of each tracked parameter, in row order."""
    return rank.table.numels


def _column(rank: RankState, name: str, n: int, fill: float) -> Floats:
    """The full-step column ``name`` (``fill`` when the frame does not carry it)."""
    got = rank.full_columns.get(name)
    return np.full(n, fill) if got is None else got


MIN_NUMEL = 16
"""Default least size of a parameter judged by a relative rule: the ratio of a handful of
numbers (a 1-element output bias) swings by orders of magnitude in healthy training."""


@dataclass
class ParamMemory:
    parameter: str | None = None


@dataclass(frozen=True)
class RatioHighSettings(RuleSettings):
    for_checks: int = 3
    warmup_steps: int = 20
    max_ratio: float = 0.1
    """Update norm / weight norm above this on a full step."""
    min_weight_norm: float = 1e-3
    """Parameters whose weight norm is below this (zero-initialised) are skipped."""
    min_numel: int = MIN_NUMEL
    """Parameters with fewer elements are skipped."""
    topk: int = 5
    """How many parameters the message names."""


class UpdateRatioHigh(Rule[RatioHighSettings, ParamMemory]):
    """A parameter's update ratio (update norm / weight norm) exceeds 0.1 on full steps.

    Sustained for ``for_checks`` full steps. The learning rate is too high for that parameter:
    training is unstable. What to do: reduce the LR 5-10x (or that group's LR), add warmup.
    """

    name = "update_ratio_high"
    severity = "warning"
    action = "reduce the learning rate 5-10x (or that parameter group's) and use warmup"
    settings_type = RatioHighSettings
    sheddable = True

    def new_memory(self) -> ParamMemory:
        return ParamMemory()

    def check(self, rank: RankState, memory: ParamMemory) -> list[Finding] | None:
        if not is_full_step(rank):
            return None
        s = self.settings
        ratios = _column(rank, "update_ratio", len(rank.names), 0.0)
        weights = rank.fresh("weight_norm")
        if weights is None:
            weights = np.full(len(ratios), math.inf)
        weights = weights[: len(ratios)]
        with np.errstate(invalid="ignore"):
            mask = np.isfinite(ratios) & (ratios > s.max_ratio) & (weights >= s.min_weight_norm)
        mask &= rank.table.numel[: len(ratios)] >= s.min_numel
        rows = np.flatnonzero(mask)
        bad = rows[np.argsort(-ratios[rows], kind="stable")].tolist()
        values = ratios.tolist()
        return _ratio_findings(self, rank, memory, bad, values, "above", s.max_ratio, s.topk)


def _ratio_findings(
    rule: Rule[Any, ParamMemory],
    rank: RankState,
    memory: ParamMemory,
    bad: list[int],
    ratios: list[float],
    side: str,
    threshold: float,
    topk: int,
) -> list[Finding]:
    """One finding naming the worst of ``bad`` (kept while it stays bad) and listing the rest."""
    names = [rank.names[i] for i in bad]
    memory.parameter = sticky(memory.parameter, names)
    if not bad:
        return []
    value = ratios[rank.table.rows[memory.parameter]] if memory.parameter else None
    listed = name_list([f"{n} ({fmt(ratios[i])})" for n, i in zip(names, bad, strict=True)], topk)
    return [
        rule.finding(
            f"update ratio {side} {fmt(threshold)} on {len(bad)} parameter(s): {listed}",
            parameter=memory.parameter,
            value=value,
            threshold=threshold,
        )
    ]


@dataclass(frozen=True)
class RatioLowSettings(RuleSettings):
    for_checks: int = 3
    min_ratio: float = 1e-7
    """Update ratio below this (but above the frozen threshold) on a full step."""
    frozen_ratio: float = 1e-12
    """At or below this, frozen_parameters reports it instead."""
    min_numel: int = MIN_NUMEL
    """Parameters with fewer elements are skipped."""
    topk: int = 5
    """How many parameters the message names."""


class UpdateRatioLow(Rule[RatioLowSettings, ParamMemory]):
    """A parameter with a non-zero gradient moves by less than 1e-7 of its norm per step.

    Sustained for ``for_checks`` full steps. The learning rate is too low for it (or its group):
    it is barely learning. What to do: raise the LR 5-10x; check the LR matches the optimizer.
    """

    name = "update_ratio_low"
    severity = "warning"
    action = "raise the learning rate 5-10x; check it matches the optimizer"
    settings_type = RatioLowSettings
    sheddable = True

    def new_memory(self) -> ParamMemory:
        return ParamMemory()

    def check(self, rank: RankState, memory: ParamMemory) -> list[Finding] | None:
        if not is_full_step(rank) or rank.stats is None or not any(rank.stats.lr):
            return None
        s = self.settings
        ratios = _column(rank, "update_ratio", len(rank.names), 0.0)
        grads = rank.columns.get("grad_norm")
        if grads is None:
            grads = np.zeros(len(ratios))
        grads = grads[: len(ratios)]
        with np.errstate(invalid="ignore"):
            mask = (s.frozen_ratio < ratios) & (ratios < s.min_ratio) & (grads > 0)
        mask &= rank.table.numel[: len(ratios)] >= s.min_numel
        if rank.stats.nograd:
            mask[list(rank.stats.nograd)] = False
        rows = np.flatnonzero(mask)
        bad = rows[np.argsort(ratios[rows], kind="stable")].tolist()
        values = ratios.tolist()
        return _ratio_findings(self, rank, memory, bad, values, "below", s.min_ratio, s.topk)


@dataclass(frozen=True)
class WeightSpikeSettings(RuleSettings):
    ratio: float = 10.0
    """A weight norm above this multiple of its previous value is a spike."""
    min_norm: float = 1e-2
    """Previous norms below this (zero-initialised or tiny tensors) are not compared."""
    min_numel: int = MIN_NUMEL
    """Parameters with fewer elements are not compared."""
    topk: int = 5
    """How many parameters the message names."""


@dataclass
class WeightSpikeMemory:
    previous: Floats = field(default_factory=lambda: np.zeros(0))
    parameter: str | None = None


class WeightNormSpike(Rule[WeightSpikeSettings, WeightSpikeMemory]):
    """A parameter's weight norm jumped more than 10x between two measurements (full steps).

    Parameters too small for a ratio to mean anything (fewer than ``min_numel`` elements, or a
    previous norm below ``min_norm``) are not compared. Usually a huge update from an
    exploding gradient or an LR mistake. What to do: restore the last good checkpoint, lower the
    LR, enable gradient clipping.
    """

    name = "weight_norm_spike"
    severity = "error"
    action = "restore the last good checkpoint; lower the LR and enable gradient clipping"
    settings_type = WeightSpikeSettings
    sheddable = True

    def new_memory(self) -> WeightSpikeMemory:
        return WeightSpikeMemory()

    def check(self, rank: RankState, memory: WeightSpikeMemory) -> list[Finding] | None:
        norms = rank.fresh("weight_norm")
        if norms is None:  # not measured this step (weights travel on full steps)
            return None
        s, previous = self.settings, memory.previous
        bad: list[int] = []
        if len(previous) == len(norms):
            with np.errstate(invalid="ignore", over="ignore"):
                mask = np.isfinite(norms) & np.isfinite(previous) & (previous >= s.min_norm)
                mask &= (rank.table.numel[: len(norms)] >= s.min_numel) & (
                    norms > s.ratio * previous
                )
            bad = np.flatnonzero(mask).tolist()
        memory.previous = norms.copy()
        names = [rank.names[i] for i in bad]
        memory.parameter = sticky(memory.parameter, names)
        if not bad:
            return []
        i = rank.table.rows[memory.parameter] if memory.parameter else bad[0]
        now, before = float(norms[i]), float(previous[i])
        return [
            self.finding(
                f"weight norm of {rank.names[i]} jumped {now / before:.1f}x to "
                f"{fmt(now)}; spiking: {name_list(names, s.topk)}",
                parameter=memory.parameter,
                value=now,
                threshold=s.ratio * before,
            )
        ]
