"""Synthetic wire frames for collector tests (no torch): a fake rank that speaks protocol v1."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from gradwatch import wire
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import build_core
from gradwatch.collector.rules import CATALOGUE, build_rules

PARAMS: tuple[tuple[str, tuple[int, ...], str], ...] = (
    ("tok_emb.weight", (256, 48), "float32"),
    ("blocks.0.ln1.weight", (48,), "float32"),
    ("blocks.0.attn.qkv.weight", (144, 48), "float32"),
    ("blocks.0.mlp.fc.weight", (192, 48), "float32"),
    ("blocks.1.ln1.weight", (48,), "float32"),
    ("blocks.1.attn.qkv.weight", (144, 48), "float32"),
    ("blocks.1.mlp.fc.weight", (192, 48), "float32"),
    ("head.weight", (256, 48), "float32"),
)
NAMES = [p[0] for p in PARAMS]


class FakeRank:
    """Builds hello and stats frames; per-parameter values default to healthy numbers."""

    def __init__(
        self,
        run: str = "demo",
        rank: int = 0,
        optimizer: str = "AdamW",
        params: Sequence[tuple[str, tuple[int, ...], str]] = PARAMS,
        frozen_by_design: Sequence[str] = (),
        world_size: int = 1,
        replicated: bool = False,
        sharded: Sequence[str] = (),
        groups: Mapping[str, int] | None = None,
    ) -> None:
        """``groups`` puts parameters in optimizer param groups other than 0 (by name)."""
        self.run, self.rank, self.optimizer = run, rank, optimizer
        self.world_size, self.replicated = world_size, replicated
        self.sharded = tuple(i for i, p in enumerate(params) if p[0] in sharded)
        self.params = [
            wire.ParamInfo(n, s, d, _numel(s), n not in frozen_by_design, (groups or {}).get(n, 0))
            for n, s, d in params
        ]
        self.names = [p.name for p in self.params if p.requires_grad]
        self.session = uuid.uuid4().hex[:16]
        self.seq = 0

    def set_trainable(self, name: str, trainable: bool) -> None:
        """Turn ``requires_grad`` of one parameter on or off (send ``hello()`` again after, as
        the agent re-announces its table)."""
        self.params = [
            dataclasses.replace(p, requires_grad=trainable) if p.name == name else p
            for p in self.params
        ]
        self.names = [p.name for p in self.params if p.requires_grad]

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def hello(self) -> wire.Hello:
        return wire.Hello(
            run=self.run, rank=self.rank, session=self.session, world_size=self.world_size,
            host="testhost", pid=100 + self.rank, torch="2.4", device="cpu",
            optimizer=self.optimizer, params=tuple(self.params), seq=self._next(), time=1.0,
            replicated=self.replicated, sharded=self.sharded,
        )  # fmt: skip

    def stats(
        self,
        step: int,
        loss: float | None = 2.0,
        lr: Sequence[float] = (1e-3,),
        grad: Mapping[str, float] | None = None,
        weight: Mapping[str, float] | None = None,
        ratio: Mapping[str, float] | None = None,
        full: bool = False,
        unchanged: Mapping[str, float] | None = None,
        underflow: Mapping[str, float] | None = None,
        nograd: Sequence[str] = (),
        metrics: Mapping[str, float] | None = None,
        scalars: Mapping[str, float] | None = None,
        nonfinite: Mapping[str, int] | None = None,
        time: float | None = None,
    ) -> wire.Stats:
        """Defaults: grad norm 0.5, weight norm 5, update ratio 1e-3. Full columns (update
        ratios, |g| details, weight norms) are sent when ``full`` or any of them is given."""
        grad, weight, ratio = grad or {}, weight or {}, ratio or {}
        unchanged, underflow = unchanged or {}, underflow or {}

        def value(field: str, n: str) -> float:
            g, r = grad.get(n, 0.5), ratio.get(n, 1e-3)
            return {
                "grad_norm": g, "grad_absmax": g, "grad_absmean": g / 10,
                "weight_norm": weight.get(n, 5.0), "update_norm": r * 5, "update_ratio": r,
                "unchanged_frac": unchanged.get(n, 0.0), "underflow_frac": underflow.get(n, 0.0),
            }[field]  # fmt: skip

        rows = [value(f, n) for n in self.names for f in wire.CHEAP_FIELDS]
        packed_full = b""
        if full or ratio or weight or unchanged or underflow:
            frows = [value(f, n) for n in self.names for f in wire.FULL_FIELDS]
            packed_full = wire.pack_floats(frows)
        m = {"grad_norm": 1.0, "step_time_seconds": 0.1, "tokens_per_second": 1000.0}
        m.update(metrics or {})
        return wire.Stats(
            run=self.run, rank=self.rank, session=self.session, seq=self._next(), step=step,
            time=float(step) if time is None else time, loss=loss, lr=tuple(lr),
            rows=wire.pack_floats(rows),
            full=packed_full, nograd=tuple(self.names.index(n) for n in nograd),
            metrics=m, scalars=dict(scalars or {}),
            nonfinite=tuple((self.names.index(n), c) for n, c in (nonfinite or {}).items()),
        )  # fmt: skip

    def bye(self, step: int, reason: str = "close", **details: Any) -> wire.Bye:
        """``details``: ``error_type``, ``error_kind``, ``error_message``, ``stack``, ``signal``."""
        return wire.Bye(
            self.run, self.rank, self.session, self._next(), step, float(step), reason, **details
        )

    def heartbeat(
        self,
        step: int,
        phase: str = "",
        phase_seconds: float = 0.0,
        declared: bool = False,
        stack: Sequence[str] = (),
    ) -> wire.Heartbeat:
        """A heartbeat; with ``phase`` as a newer agent sends them from its own thread."""
        return wire.Heartbeat(
            self.run, self.rank, self.session, self._next(), step, float(step),
            phase=phase, phase_seconds=phase_seconds, declared=declared, stack=tuple(stack),
        )  # fmt: skip


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def job(n: int, run: str = "demo", replicated: bool = True, **kw: Any) -> list[FakeRank]:
    """The ``n`` ranks of one job (DDP by default)."""
    return [FakeRank(run, r, world_size=n, replicated=replicated, **kw) for r in range(n)]


class Harness:
    """A collector core (one rule, or all) without sockets or disk, fed frame by frame.

    ``rule`` alone keeps just that rule (``overrides`` its settings); ``rules`` maps several
    rules to their overrides and keeps only them."""

    def __init__(
        self,
        rule: str | None = None,
        *,
        rules: dict[str, dict[str, Any]] | None = None,
        config: CollectorConfig | None = None,
        **overrides: Any,
    ) -> None:
        chosen = dict(rules or {})
        if rule is not None:
            chosen[rule] = overrides
        if chosen:
            assert set(chosen) <= set(CATALOGUE), set(chosen) - set(CATALOGUE)
            settings = {n: {"enabled": False} for n in CATALOGUE if n not in chosen}
            settings.update(chosen)
        else:
            settings = {}
        self.core = build_core(config or CollectorConfig(), build_rules(settings), persist=False)
        self.fleet, self.book, self.engine = self.core.fleet, self.core.book, self.core.engine
        self.now = 1000.0

    def send(self, frame: wire.Frame, dt: float = 1.0) -> None:
        self.now += dt
        state = self.fleet.apply(wire.decode(wire.encode(frame)), self.now)
        self.engine.on_frame(state, frame, self.now)

    def step(self, ranks: Sequence[FakeRank], step: int, dt: float = 1.0, **kw: Any) -> None:
        """Every rank's stats frame of ``step`` (``kw`` as :meth:`FakeRank.stats`), ``dt``
        seconds after the previous frame (the ranks' frames arrive together)."""
        self.now += dt
        for r in ranks:
            self.send(r.stats(step, **kw), dt=0.0)

    def offer(self, frame: wire.Frame, dt: float = 1.0) -> bool:
        """Like ``send``, but a rejected frame is counted in the core's health as ingest
        counts it (limits raise ``collector_limit`` on the next tick); True if accepted."""
        try:
            self.send(frame, dt)
        except wire.WireError as exc:
            self.core.health.reject(exc, self.now)
            return False
        return True

    def tick(self, dt: float = 0.0) -> None:
        self.now += dt
        self.engine.tick(self.now)

    def firing(self, rule: str | None = None) -> list[Any]:
        return [a for a in self.book.alerts("firing") if rule is None or a.rule == rule]

    def open(self) -> list[Any]:
        return [a for a in self.book.alerts() if a.state != "resolved"]
