"""Cross-rank rules judged on every step all ranks reported: straggler (one rank's own work
slower than the others') and replica_divergence (replicas whose statistics disagree)."""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from gradwatch.wire import Hello, Stats
from gradwatch.wire import metrics as m

from ..rank_ranges import compact_ranks
from ..state import RunState, StepRanks
from .base import Finding, Rule, RuleSettings, fmt, median

OWN_PHASES = ("data", "forward")
"""Phases outside collectives on every rank; ``backward`` too when the model is not replicated
(no all-reduce waits in it)."""


@dataclass(frozen=True)
class StragglerSettings(RuleSettings):
    clear_checks: int = 3
    ratio: float = 1.5
    """A rank's time outside collectives above this multiple of the other ranks' median..."""
    min_share: float = 0.1
    """...by at least this fraction of its step time (a gap that costs the job less is noise)..."""
    for_seconds: float = 60.0
    """...for this long (collector clock)..."""
    for_steps: int = 10
    """...and over at least this many compared steps (a pause with no steps is no evidence)."""
    window: int = 5
    """A rank's time is the median of its latest this many compared steps (a slow step is
    jitter, not a straggler)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ratio <= 1 or not 0 <= self.min_share < 1 or self.for_seconds < 0:
            raise ValueError("ratio must be > 1, min_share in [0, 1), for_seconds >= 0")
        if self.window < 1 or self.for_steps < 0:
            raise ValueError("window must be at least 1 and for_steps not negative")


@dataclass
class StragglerMemory:
    own: dict[int, deque[float]] = field(default_factory=dict)
    """Per rank: its latest seconds per step outside collectives."""
    parts: dict[int, deque[dict[str, float]]] = field(default_factory=dict)
    """Per rank: its latest seconds per phase."""
    step_time: dict[int, deque[float]] = field(default_factory=dict)
    since: dict[int, tuple[float, int, int]] = field(default_factory=dict)
    """Per rank: when it was first seen slower (collector clock), how many compared steps it
    has stayed slower since, and the step it began at."""

    def phase(self, rank: int, name: str) -> float:
        """The rank's median seconds in phase ``name`` over the window."""
        return median(p[name] for p in self.parts[rank])


def median_without(ordered: list[float], value: float) -> float:
    """The median of sorted ``ordered`` with one occurrence of ``value`` left out, in O(log n)
    (every rank of a thousand compared with the others' median, every step)."""
    i = bisect.bisect_left(ordered, value)
    n = len(ordered) - 1

    def at(j: int) -> float:
        return ordered[j if j < i else j + 1]

    mid = n // 2
    return at(mid) if n % 2 else (at(mid - 1) + at(mid)) / 2


def own_phases(hello: Hello) -> tuple[str, ...]:
    return OWN_PHASES if hello.replicated else (*OWN_PHASES, "backward")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


class Straggler(Rule[StragglerSettings, StragglerMemory]):
    """One rank's own work per step (data + forward, and backward when no all-reduce runs in
    it) exceeds ``ratio`` x the median of the other ranks, for ``for_seconds`` and
    ``for_steps``.

    Compared from the per-step phase durations every agent sends (``phase_*_seconds``), on each
    step all ranks reported. Under DDP every rank shows the same step time (the fast ones wait
    in backward's all-reduce), so only the phase split shows the culprit; with 2 ranks each is
    compared with the other. The message puts the straggler's breakdown beside the others'
    median. What to do: look at that rank's data loading (workers, storage, host CPU), its
    host (other processes, throttling) and its device.
    """

    name = "straggler"
    severity = "warning"
    action = "check the slow rank's data loader, host load and device; the others wait for it"
    settings_type = StragglerSettings
    scope = "run"

    def new_memory(self) -> StragglerMemory:
        return StragglerMemory()

    def check_step(
        self, run: RunState, step: StepRanks, memory: StragglerMemory, now: float
    ) -> list[Finding] | None:
        s = self.settings
        for rank, (hello, stats) in step.items():
            parts = {p: stats.metrics.get(m.phase_seconds(p)) for p in m.STEP_PHASES}
            if any(v is None or not math.isfinite(v) for v in parts.values()):
                continue  # an agent without phase durations
            values = {p: float(v) for p, v in parts.items() if v is not None}
            own = sum(values[p] for p in own_phases(hello))
            memory.own.setdefault(rank, deque(maxlen=s.window)).append(own)
            memory.parts.setdefault(rank, deque(maxlen=s.window)).append(values)
            total = stats.metrics.get(m.STEP_TIME) or sum(values.values())
            memory.step_time.setdefault(rank, deque(maxlen=s.window)).append(total)
        typical = {r: median(v) for r, v in memory.own.items() if r in step}
        if len(typical) < 2:
            return None
        ordered = sorted(typical.values())
        found = []
        for rank, own in typical.items():
            ref = median_without(ordered, own)
            gap = own - ref
            slow = own > s.ratio * ref and gap >= s.min_share * median(memory.step_time[rank])
            if not slow:
                memory.since.pop(rank, None)
                continue
            number = step[rank][1].step
            since, steps, onset = memory.since.get(rank, (now, -1, number))
            memory.since[rank] = (since, steps + 1, onset)
            if now - since >= s.for_seconds and steps + 1 >= s.for_steps:
                ratio = own / ref if ref > 0 else math.inf
                found.append((ratio, rank, ref, now - since, onset))
        if not found:
            return []
        worst = max(found)[1]
        return [
            self.finding(
                self._message(run, rank, ratio, ref, held, memory, list(typical)),
                value=ratio,
                threshold=s.ratio,
                rank=rank,
                origin=rank == worst,
                onset=onset,
            )
            for ratio, rank, ref, held, onset in sorted(found, key=lambda f: f[1])
        ]

    def _message(
        self,
        run: RunState,
        rank: int,
        ratio: float,
        ref: float,
        held: float,
        memory: StragglerMemory,
        compared: list[int],
    ) -> str:
        others = [r for r in compared if r != rank]
        names = own_phases(run.ranks[rank].hello) if rank in run.ranks else OWN_PHASES

        def breakdown(parts: dict[str, float]) -> str:
            return ", ".join(f"{p} {_ms(parts[p])}" for p in names)

        mid = {p: median(memory.phase(r, p) for r in others) for p in names}
        mine = {p: memory.phase(rank, p) for p in names}
        who = f"rank {others[0]}" if len(others) == 1 else "the other ranks' median"
        text = (
            f"rank {rank} spends {_ms(median(memory.own[rank]))} a step outside collectives "
            f"({breakdown(mine)}) vs {_ms(ref)} for {who} ({breakdown(mid)}), {fmt(ratio)}x, "
            f"for {held:.0f} s"
        )
        if "backward" not in names:  # under DDP the others' backward is mostly waiting
            wait = median(memory.phase(r, "backward") for r in others)
            text += f"; the others wait for it in backward (all-reduce: {_ms(wait)})"
        return text


@dataclass(frozen=True)
class DivergenceSettings(RuleSettings):
    clear_checks: int = 3
    rtol: float = 1e-5
    """Two ranks' values of a parameter disagree when they differ by more than this times the
    larger one."""
    topk: int = 3
    """How many disagreeing parameters the message names."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.rtol > 0 or self.topk < 1:
            raise ValueError("rtol must be positive and topk at least 1")


@dataclass
class DivergenceMemory:
    weights: dict[int, list[str]] = field(default_factory=dict)
    """Odd ranks of the latest full step's weight norms, each with the parameters it differs
    in (held until the next full step: weights are only measured there)."""
    weight_detail: str = ""
    weight_step: int = -1
    parameter: str | None = None
    """The parameter the alert names; kept while it still disagrees."""


@dataclass
class Disagreement:
    """One column's disagreement at one step."""

    odd: dict[int, list[str]]
    """Each rank outside the majority (every rank when there is none), and its parameters."""
    detail: str


def compare(
    column: str,
    rows: dict[int, np.ndarray],
    names: tuple[str, ...],
    skip: set[int],
    rtol: float,
    topk: int = 3,
) -> Disagreement | None:
    """Ranks whose ``column`` values (one per parameter row) disagree with the majority's; the
    detail names the first ``topk`` parameters with the odd value beside the majority's."""
    ranks = sorted(rows)
    matrix = np.stack([rows[r] for r in ranks]).astype(np.float64)
    finite = np.isfinite(matrix).all(axis=0)
    spread = matrix.max(axis=0) - matrix.min(axis=0)
    scale = np.abs(matrix).max(axis=0)
    bad = np.flatnonzero(finite & (spread > rtol * scale))
    odd: dict[int, list[str]] = {}
    shown: list[str] = []
    first: list[int] = []
    for i in bad.tolist():
        if i in skip:
            continue
        values = matrix[:, i]
        agree = _majority(values, rtol)
        outliers = [r for r, ok in zip(ranks, agree, strict=True) if not ok]
        for r in outliers:
            odd.setdefault(r, []).append(names[i])
        first = first or outliers
        if len(shown) < topk:
            ref = float(np.median(values[agree])) if agree.any() else float(np.median(values))
            worst = max(range(len(ranks)), key=lambda j: abs(values[j] - ref))
            shown.append(f"{names[i]} {values[worst]:.7g} vs {ref:.7g}")
    if not odd:
        return None
    count = len({n for ps in odd.values() for n in ps})
    detail = f"{column} of {_who(first, ranks)} on {count} parameter(s): {'; '.join(shown)}"
    return Disagreement(odd, detail)


def _majority(values: np.ndarray, rtol: float) -> np.ndarray:
    """Mask of the values in the largest group agreeing within ``rtol``, when that group is
    more than half of them; all False otherwise (no majority: every rank is named)."""
    order = np.argsort(values, kind="stable")
    best, start = (0, 0), 0
    for j in range(1, len(order) + 1):
        if j == len(order) or abs(values[order[j]] - values[order[start]]) > rtol * max(
            abs(values[order[j]]), abs(values[order[start]])
        ):
            if j - start > best[1] - best[0]:
                best = (start, j)
            start = j
    mask = np.zeros(len(values), dtype=bool)
    if 2 * (best[1] - best[0]) > len(values):
        mask[order[best[0] : best[1]]] = True
    return mask


def _who(outliers: list[int], ranks: list[int]) -> str:
    rest = [r for r in ranks if r not in outliers]
    if not rest:
        return f"ranks {compact_ranks(outliers)} disagree ({len(ranks)} ranks, no majority)"
    noun = "rank" if len(outliers) == 1 else "ranks"
    return f"{noun} {compact_ranks(outliers)} disagree with ranks {compact_ranks(rest)}"


def _rows(hello: Hello, stats: Stats, column: str) -> np.ndarray | None:
    """One per-parameter column of a stats frame (None when the frame does not carry it)."""
    if column in hello.fields:
        fields, data = hello.fields, stats.rows
    elif column in hello.full_fields and stats.full:
        fields, data = hello.full_fields, stats.full
    else:
        return None
    block = np.frombuffer(data, dtype="<f4").reshape(-1, len(fields))
    return block[:, fields.index(column)]


class ReplicaDivergence(Rule[DivergenceSettings, DivergenceMemory]):
    """Replicas of one model disagree: per-parameter gradient norms of the same step (every
    step), or weight norms (full steps), differ across ranks beyond ``rtol``.

    Judged when the hellos say the model is replicated (DDP, or ``watch(..., replicated=True)``);
    sharded parameters (FSDP, ZeRO) are skipped. After DDP's all-reduce every rank holds the same
    gradients and takes the same step, so any difference means desynchronised replicas (a rank
    that skipped a step or a broadcast, a weight changed outside the optimizer) or silent data
    corruption. The message names the step, the first parameter and the odd rank (the minority
    with 3 or more ranks; both with 2). What to do: stop the job and restart from a checkpoint;
    if it repeats on one rank, suspect its device (ECC errors, DCGM) or code that touches weights
    on some ranks only.
    """

    name = "replica_divergence"
    severity = "critical"
    action = "restart from a checkpoint; if one rank repeats, check its GPU (ECC/XID, DCGM)"
    settings_type = DivergenceSettings
    scope = "run"

    def new_memory(self) -> DivergenceMemory:
        return DivergenceMemory()

    def check_step(
        self, run: RunState, step: StepRanks, memory: DivergenceMemory, now: float
    ) -> list[Finding] | None:
        replicas = {r: hs for r, hs in step.items() if hs[0].replicated}
        tables = {tuple(p.name for p in h.params) for h, _ in replicas.values()}
        if len(replicas) < 2 or len(tables) != 1:
            return None
        hello = next(iter(replicas.values()))[0]
        names = tuple(hello.params[i].name for i in hello.tracked)
        sharded = set(hello.sharded)
        skip = {row for row, i in enumerate(hello.tracked) if i in sharded}
        for _, stats in replicas.values():
            skip.update(stats.nograd)
        number = next(iter(replicas.values()))[1].step
        rtol, topk = self.settings.rtol, self.settings.topk
        found: dict[int, list[str]] = {}
        details = []
        grads = {r: _rows(h, s, "grad_norm") for r, (h, s) in replicas.items()}
        if all(v is not None for v in grads.values()):
            got = compare("gradient norms", _present(grads), names, skip, rtol, topk)
            if got is not None:
                found.update(got.odd)
                details.append(got.detail)
        weights = {r: _rows(h, s, "weight_norm") for r, (h, s) in replicas.items()}
        if all(v is not None for v in weights.values()):
            got = compare("weight norms", _present(weights), names, skip, rtol, topk)
            memory.weights = got.odd if got is not None else {}
            memory.weight_detail = got.detail if got is not None else ""
            memory.weight_step = number
        for rank, params in memory.weights.items():
            found.setdefault(rank, []).extend(params)
        if memory.weights:
            details.append(memory.weight_detail + f" (full step {memory.weight_step})")
        if not found:
            memory.parameter = None
            return []
        params = [n for n in names if any(n in ps for ps in found.values())]
        if memory.parameter not in params:
            memory.parameter = params[0]
        message = f"step {number}: " + "; ".join(details) + f" (rtol {self.settings.rtol:g})"
        return [
            self.finding(message, parameter=memory.parameter, value=float(len(params)), rank=r)
            for r in sorted(found)
        ]


def _present(columns: dict[int, np.ndarray | None]) -> dict[int, np.ndarray]:
    return {r: v for r, v in columns.items() if v is not None}
