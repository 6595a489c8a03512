"""frozen_parameters: trainable parameters that stopped learning, named by the cause."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..params import Floats
from ..state import RankState
from .base import Finding, Rule, RuleSettings, fmt, name_list, sticky
from .updates import LOW_PRECISION, dtypes, is_full_step


@dataclass(frozen=True)
class FrozenSettings(RuleSettings):
    max_ratio: float = 1e-12
    """Update ratio at or below this counts as not moving."""
    checks: int = 3
    """Consecutive full checks a parameter must not move while its gradient is non-zero."""
    unchanged_frac: float = 0.99
    """For bf16/fp16 parameters, this fraction of unchanged sampled elements also counts."""
    underflow_frac: float = 0.5
    """Above this underflow fraction the message blames low-precision rounding."""
    zero_lr_frames: int = 2
    """Frames a param group's learning rate must be exactly 0 (after it was above 0, or after
    ``zero_lr_grace_steps``) before its parameters count as frozen: a schedule passing through
    0 for one step is not a freeze."""
    zero_lr_grace_steps: int = 50
    """A learning rate of 0 since the first frame (warmup from 0) is a freeze only after this
    many steps."""
    topk: int = 5
    """How many parameters the message names."""


@dataclass
class FrozenMemory:
    streak: dict[str, int] = field(default_factory=dict)
    """Consecutive still full checks per parameter."""
    still_since: dict[str, int] = field(default_factory=dict)
    """Step of the first still check of the current streak."""
    sampled: dict[str, int] = field(default_factory=dict)
    """Parameters frozen by the sampled updates at the latest full check, with their onset."""
    underflow: dict[str, float] = field(default_factory=dict)
    ratio: dict[str, float] = field(default_factory=dict)
    lr_was_positive: dict[int, bool] = field(default_factory=dict)
    zero_since: dict[int, int] = field(default_factory=dict)
    """Param group → first step of its current run of zero learning rates."""
    zero_frames: dict[int, int] = field(default_factory=dict)
    parameter: str | None = None


class FrozenParameters(Rule[FrozenSettings, FrozenMemory]):
    """A trainable parameter does not move although it should, named by the cause.

    Causes, each with its onset step: (1) its param group's learning rate is exactly 0 (seen
    in the frame at once: learning rates travel every step); (2) ``requires_grad`` was turned
    off mid-run (the agent re-announces its table; a warning, since a planned staged freeze
    looks the same); (3) bf16/fp16 weights whose updates round to zero (sampled underflow);
    (4) a sampled update ratio <= 1e-12 for ``checks`` consecutive full steps while the
    gradient is non-zero. Parameters frozen from the start (``requires_grad=False``) are
    frozen by design and never reported; ones that become trainable later are tracked from
    then on. What to do: check the parameter's optimizer group and its LR; if it is bf16/fp16
    and updates underflow, keep fp32 master weights (autocast) instead of casting the model.
    """

    name = "frozen_parameters"
    severity = "error"
    action = (
        "check the parameter is in an optimizer group with a non-zero LR and still requires "
        "grad; for bf16/fp16 weights keep fp32 master weights (autocast) instead of casting "
        "the model"
    )
    settings_type = FrozenSettings
    sheddable = True

    def new_memory(self) -> FrozenMemory:
        return FrozenMemory()

    def check(self, rank: RankState, memory: FrozenMemory) -> list[Finding] | None:
        stats = rank.stats
        if stats is None:
            return None
        if is_full_step(rank) and any(stats.lr):
            self._sample(rank, memory)
        causes: list[tuple[str, int, str]] = []  # (parameter, onset, why)
        causes += [(n, on, "lr 0") for n, on in self._zero_lr(rank, memory).items()]
        causes += [(n, on, "requires_grad off") for n, on in rank.untracked.items()]
        causes += [(n, on, "not moving") for n, on in memory.sampled.items()]
        seen: dict[str, tuple[int, str]] = {}
        for name, onset, why in causes:
            seen.setdefault(name, (onset, why))
        names = list(seen)
        memory.parameter = sticky(memory.parameter, names)
        if not names or memory.parameter is None:
            return []
        return [self._finding(rank, memory, seen)]

    # ------------------------------------------------------------------------ causes

    def _zero_lr(self, rank: RankState, memory: FrozenMemory) -> dict[str, int]:
        """Tracked parameters whose group's learning rate is exactly 0, with its onset."""
        assert rank.stats is not None
        s, step, frozen = self.settings, rank.stats.step, {}
        groups = rank.table.group_set
        for g, lr in enumerate(rank.stats.lr):
            if not math.isfinite(lr) or lr != 0.0:
                memory.lr_was_positive[g] = memory.lr_was_positive.get(g, False) or lr > 0
                memory.zero_since.pop(g, None)
                memory.zero_frames.pop(g, None)
                continue
            memory.zero_since.setdefault(g, step)
            memory.zero_frames[g] = memory.zero_frames.get(g, 0) + 1
            due = memory.lr_was_positive.get(g) or rank.steps_seen >= s.zero_lr_grace_steps
            if g in groups and due and memory.zero_frames[g] >= s.zero_lr_frames:
                for i, group in enumerate(rank.table.groups):
                    if group == g:
                        frozen[rank.names[i]] = memory.zero_since[g]
        return frozen

    def _sample(self, rank: RankState, memory: FrozenMemory) -> None:
        """The sampled causes, judged on a full step (kept until the next one)."""
        assert rank.stats is not None
        s, step = self.settings, rank.stats.step
        full = rank.full_columns
        ratios = _listed(full.get("update_ratio"), 0)
        unchanged = _listed(full.get("unchanged_frac"), len(ratios))
        underflow = _listed(full.get("underflow_frac"), len(ratios))
        grads = _listed(rank.columns.get("grad_norm"), len(ratios))
        kinds, missing = dtypes(rank), set(rank.stats.nograd)
        memory.sampled, memory.underflow, memory.ratio = {}, {}, {}
        for i, (name, r) in enumerate(zip(rank.names, ratios, strict=False)):
            low = kinds[i] in LOW_PRECISION if i < len(kinds) else False
            still = r <= s.max_ratio or (low and unchanged[i] >= s.unchanged_frac)
            moving_grad = i not in missing and math.isfinite(grads[i]) and grads[i] > 0
            if still and moving_grad:
                memory.still_since.setdefault(name, step)
                memory.streak[name] = memory.streak.get(name, 0) + 1
            else:
                memory.still_since.pop(name, None)
                memory.streak.pop(name, None)
            if memory.streak.get(name, 0) >= s.checks:
                memory.sampled[name] = memory.still_since[name]
                memory.underflow[name], memory.ratio[name] = underflow[i], r

    # ------------------------------------------------------------------------ message

    def _finding(
        self, rank: RankState, memory: FrozenMemory, seen: dict[str, tuple[int, str]]
    ) -> Finding:
        s, head = self.settings, memory.parameter
        assert head is not None and rank.stats is not None
        onset, why = seen[head]
        parts: list[str] = []
        zero = [n for n, (_, w) in seen.items() if w == "lr 0"]
        if zero:
            groups = sorted({_group(rank, n) for n in zero})
            parts.append(
                f"learning rate is exactly 0 for param group(s) {groups}: {len(zero)} trainable "
                f"parameter(s) get no update: {name_list(zero, s.topk)}"
            )
        off = [n for n, (_, w) in seen.items() if w == "requires_grad off"]
        if off:
            last = min(rank.untracked[n] for n in off)
            parts.append(
                f"requires_grad turned off mid-run (after step {last})"
                f" for {len(off)} parameter(s): {name_list(off, s.topk)}; if this is a planned "
                "staged freeze, acknowledge the alert"
            )
        still = [n for n, (_, w) in seen.items() if w == "not moving"]
        if still:
            parts.append(
                f"update ratio <= {fmt(s.max_ratio)} for {s.checks} checks while gradient "
                f"non-zero — {len(still)} frozen parameter(s): "
                + name_list([f"{n} ({fmt(memory.ratio[n])})" for n in still], s.topk)
            )
            rounding = [n for n in still if memory.underflow[n] >= s.underflow_frac]
            if rounding:
                kinds = dict(zip(rank.names, dtypes(rank), strict=False))
                which = sorted({kinds.get(n, "?") for n in rounding})
                parts.append(
                    f"{len(rounding)} of them have updates that round to zero (underflow "
                    f"{fmt(memory.underflow[rounding[0]])}, dtype {'/'.join(which)}): keep fp32 "
                    "master weights and use autocast instead of casting the model to bf16/fp16"
                )
        value = memory.ratio.get(head, 0.0)
        only_planned = all(w == "requires_grad off" for _, w in seen.values())
        return self.finding(
            "; ".join(parts),
            parameter=head,
            value=value,
            threshold=s.max_ratio,
            severity="warning" if only_planned else None,
            onset=onset,
        )


def _group(rank: RankState, name: str) -> int:
    return rank.table.group_of[name]


def _listed(column: Floats | None, n: int) -> list[float]:
    """``column`` as a list, or ``n`` zeros when the frame does not carry it."""
    return [0.0] * n if column is None else column.tolist()
