"""Runs the rules over the fleet: per-rank rules on every stats frame and on the collector's
clock tick; run-level rules on the tick, when a rank says hello or bye, and on every step all
ranks have reported.

Each rule runs on its own: one that raises is counted (``IngestHealth.rule_errors``) and logged
at a bounded rate with the frame's run, rank and step, and the other rules still judge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gradwatch.wire import Bye, Frame, Hello, Stats

from .alert import COLLECTOR_RANK, COLLECTOR_RUN
from .book import AlertBook, Policy
from .config import CollectorConfig
from .fleet import Fleet
from .health import IngestHealth
from .rules import AnyRule
from .rules.base import Finding, Rule
from .run_record import RunRecord
from .state import RankState, RunState, StepRanks
from .store import Store, StoreError
from .writer import StoreWriter

log = logging.getLogger(__name__)

RULE_ERROR_LOG_SECONDS = 60.0
"""At most one log line per rule per this many seconds for its errors (all are counted)."""
PRUNE_SECONDS = 3600.0
"""How often the database is pruned (resolved alerts and runs past the retention)."""
SWEEP_SECONDS = 60.0
"""How often open alerts of ranks no longer in memory (e.g. reloaded after a restart, never
heard from again) are looked for; they resolve ``grace_seconds`` after their last update."""


def policy_of(rule: AnyRule) -> Policy:
    s = rule.settings
    return Policy(rule.name, rule.severity, s.for_checks, s.clear_checks, s.cooldown_seconds)


class Engine:
    """Owns the rules' judgement of the fleet; feeds findings to the alert book; keeps runs
    persisted; forgets runs (ended ones after ``grace_seconds``, silent ones after
    ``stale_seconds``).

    Used from one thread (ingest): ``on_frame`` after ``Fleet.apply``, ``tick`` periodically.
    """

    def __init__(
        self,
        fleet: Fleet,
        book: AlertBook,
        rules: list[AnyRule],
        config: CollectorConfig | None = None,
        store: Store | None = None,
        health: IngestHealth | None = None,
    ) -> None:
        self.fleet = fleet
        self.book = book
        self.rules = rules
        self.config = config or CollectorConfig()
        self.store = store
        self.health = health or IngestHealth()
        self.policies = {rule.name: policy_of(rule) for rule in rules}
        self.rank_rules = [r for r in rules if r.scope == "rank"]
        self.run_rules = [r for r in rules if r.scope == "run"]
        self.frame_rules = [r for r in self.rank_rules if type(r).check is not Rule.check]
        """Per-rank rules that judge stats frames (the others only tick)."""
        self.scalar_rules = [r for r in self.frame_rules if not r.sheddable]
        """The rules a shed frame still gets (ingest behind)."""
        self._collector_memory = {rule.name: rule.new_memory() for rule in rules}
        self._dirty_runs: set[tuple[str, int]] = set()
        self._expired: set[tuple[str, int]] = set()
        self._last_prune = 0.0
        self._last_sweep = 0.0
        self._logged_error: dict[str, float] = {}
        fleet.on_forget = self._forgotten
        self.writer: StoreWriter | None = None
        """When set, run records go to the background writer instead of the store."""
        self.frame_listeners: list[Callable[[RankState, Frame], None]] = []
        """Called with every frame before the rules judge it (the page's history)."""

    def _memories(self, state: RankState) -> dict[str, Any]:
        if not state.memory:
            state.memory.update({r.name: r.new_memory() for r in self.rank_rules})
        return state.memory

    def _judge(
        self, rule: AnyRule, where: str, judge: Callable[..., list[Finding] | None], *args: Any
    ) -> list[Finding] | None:
        """``judge(*args)``; an exception is counted against the rule and logged at a bounded
        rate naming ``where``."""
        try:
            return judge(*args)
        except Exception:  # one rule's bug must not keep the others from judging
            self.health.rule_errors[rule.name] += 1
            now = time.monotonic()
            if now - self._logged_error.get(rule.name, -1e18) >= RULE_ERROR_LOG_SECONDS:
                self._logged_error[rule.name] = now
                count = self.health.rule_errors[rule.name]
                log.exception("rule %s failed on %s (%d errors so far)", rule.name, where, count)
            return None

    def _run_memory(self, run: RunState, rule: AnyRule) -> Any:
        if rule.name not in run.memory:
            run.memory[rule.name] = rule.new_memory()
        return run.memory[rule.name]

    def _observe(
        self, rule: AnyRule, state: RankState, found: list[Finding] | None, now: float
    ) -> None:
        if found is None or (found and state.steps_seen < rule.settings.warmup_steps):
            return
        self.book.observe(
            self.policies[rule.name], state.run, state.rank, state.last_step, found, now
        )

    def _observe_run(
        self, rule: AnyRule, run: RunState, found: list[Finding] | None, now: float
    ) -> None:
        if found is None:
            return
        latest = max((s.last_step for s in run.ranks.values()), default=-1)
        items = []
        for f in found:
            assert f.rank is not None, f"{rule.name}: a run-level finding names its rank"
            state = run.ranks.get(f.rank)
            step = f.step if f.step is not None else latest if state is None else state.last_step
            items.append((f.rank, step, f))
        self.book.observe_run(self.policies[rule.name], run.name, items, now)

    def on_frame(
        self, state: RankState, frame: Frame, now: float | None = None, *, shed: bool = False
    ) -> None:
        """Judge a rank after one of its frames was applied to the fleet (and its run, when
        the frame completes a step of every rank or changes who is running). ``shed``: ingest
        is behind and a newer frame of this rank is waiting: skip the sheddable rules."""
        now = time.time() if now is None else now
        self._dirty_runs.add((state.run, state.rank))
        self._expired.discard((state.run, state.rank))
        for listener in self.frame_listeners:
            listener(state, frame)
        run = self.fleet.runs[state.run]
        if isinstance(frame, (Hello, Bye)):
            self._check_run(run, now)
        if isinstance(frame, Bye):
            self._check_steps(run, run.steps.ready(run.running), now)
        if not isinstance(frame, Stats):
            return
        memory = self._memories(state)
        if not shed:
            state.judged_at = frame.time
        where = f"run {state.run} rank {state.rank} step {frame.step}"
        for rule in self.scalar_rules if shed else self.frame_rules:
            found = self._judge(rule, where, rule.check, state, memory[rule.name])
            self._observe(rule, state, found, now)
        if self.run_rules:
            self._check_steps(run, run.steps.add(state.hello, frame, run.running), now)

    def _check_run(self, run: RunState, now: float) -> None:
        where = f"run {run.name}"
        for rule in self.run_rules:
            memory = self._run_memory(run, rule)
            found = self._judge(rule, where, rule.check_run, run, memory, now)
            self._observe_run(rule, run, found, now)

    def _check_steps(self, run: RunState, steps: list[tuple[int, StepRanks]], now: float) -> None:
        for step, ranks in steps:
            where = f"run {run.name} step {step}"
            for rule in self.run_rules:
                memory = self._run_memory(run, rule)
                found = self._judge(rule, where, rule.check_step, run, ranks, memory, now)
                if found is not None:
                    found = [f if f.step is not None else replace(f, step=step) for f in found]
                self._observe_run(rule, run, found, now)

    def tick(self, now: float | None = None) -> None:
        """Time-based rules, lifecycle timeouts, forgetting, persistence and retention."""
        now = time.time() if now is None else now
        cfg = self.config
        for run in list(self.fleet.runs.values()):
            if not (run.ended and now - run.last_seen > cfg.grace_seconds):
                self._check_run(run, now)  # an ended run's alerts resolve with its ranks
            for state in list(run.ranks.values()):
                memory = self._memories(state)
                where = f"run {state.run} rank {state.rank} at step {state.last_step}"
                for rule in self.rank_rules:
                    found = self._judge(rule, where, rule.tick, state, memory[rule.name], now)
                    self._observe(rule, state, found, now)
                key = (state.run, state.rank)
                if state.ended and now - state.last_seen > cfg.grace_seconds:
                    if key not in self._expired:
                        self._expired.add(key)
                        self.book.resolve_rank(state.run, state.rank, now)
            idle = now - run.last_seen
            if (run.ended and idle > cfg.grace_seconds) or idle > cfg.stale_seconds:
                self.fleet.forget(run.name)
        self._tick_collector(now)
        if now - self._last_sweep > SWEEP_SECONDS:
            self._last_sweep = now
            for name, rank in self.book.idle_ranks(now - cfg.grace_seconds):
                if name != COLLECTOR_RUN and self.fleet.rank(name, rank) is None:
                    self.book.resolve_rank(name, rank, now)
        self.flush()
        if now - self._last_prune > PRUNE_SECONDS:
            self._last_prune = now
            self.book.prune(cfg.retention_days * 86400, now)

    def _tick_collector(self, now: float) -> None:
        for rule in self.rules:
            memory = self._collector_memory[rule.name]
            found = self._judge(
                rule, "the collector", rule.tick_collector, self.health, memory, now
            )
            if found is not None:
                policy = self.policies[rule.name]
                self.book.observe(policy, COLLECTOR_RUN, COLLECTOR_RANK, 0, found, now)

    def _forgotten(self, run: RunState) -> None:
        """A run leaves memory: persist its final record and resolve its open alerts."""
        now = time.time()
        for state in run.ranks.values():
            self._save_runs([RunRecord.of(state)])
            self._dirty_runs.discard((state.run, state.rank))
            self._expired.discard((state.run, state.rank))
            self.book.resolve_rank(state.run, state.rank, now)

    def flush(self) -> None:
        """Persist updated alerts and runs (a failed write is kept and retried next time)."""
        self.book.flush()
        if self.store is None or not self._dirty_runs:
            return
        live = [(key, self.fleet.rank(*key)) for key in self._dirty_runs]
        records = [RunRecord.of(s) for _, s in live if s is not None]
        if self._save_runs(records):
            self._dirty_runs.clear()

    def _save_runs(self, records: list[RunRecord]) -> bool:
        if self.writer is not None:
            self.writer.save_runs(records)
            return True
        if self.store is None:
            return True
        try:
            self.store.save_runs(records)
        except StoreError:  # the store keeps the error for /readyz; the book logs failures
            return False
        return True
