"""Runs the rules over the fleet: per-rank rules on every stats frame and on the collector's
clock tick; run-level rules on the tick, when a rank says hello or bye, and on every step all
ranks have reported."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from gradwatch.wire import Bye, Frame, Hello, Stats

from .book import AlertBook, Policy
from .config import CollectorConfig
from .rules import AnyRule
from .rules.base import Finding
from .run_record import RunRecord
from .state import Fleet, RankState, RunState, StepRanks
from .store import Store


def policy_of(rule: AnyRule) -> Policy:
    s = rule.settings
    return Policy(rule.name, rule.severity, s.for_checks, s.clear_checks, s.cooldown_seconds)


class Engine:
    """Owns per-rank rule memory; feeds findings to the alert book; keeps runs persisted.

    Used from one thread (ingest): ``on_frame`` after ``Fleet.apply``, ``tick`` periodically.
    """

    def __init__(
        self,
        fleet: Fleet,
        book: AlertBook,
        rules: list[AnyRule],
        config: CollectorConfig | None = None,
        store: Store | None = None,
    ) -> None:
        self.fleet = fleet
        self.book = book
        self.rules = rules
        self.config = config or CollectorConfig()
        self.store = store
        self.policies = {rule.name: policy_of(rule) for rule in rules}
        self.rank_rules = [r for r in rules if r.scope == "rank"]
        self.run_rules = [r for r in rules if r.scope == "run"]
        self._memory: dict[str, dict[str, Any]] = {}
        self._dirty_runs: set[tuple[str, int]] = set()
        self._expired: set[str] = set()
        self._last_prune = 0.0

    def _memories(self, state: RankState) -> dict[str, Any]:
        session = state.hello.session
        memory = self._memory.get(session)
        if memory is None:
            memory = self._memory[session] = {r.name: r.new_memory() for r in self.rank_rules}
        return memory

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

    def on_frame(self, state: RankState, frame: Frame, now: float | None = None) -> None:
        """Judge a rank after one of its frames was applied to the fleet (and its run, when
        the frame completes a step of every rank or changes who is running)."""
        now = time.time() if now is None else now
        self._dirty_runs.add((state.run, state.rank))
        self._expired.discard(f"{state.run}\0{state.rank}")
        run = self.fleet.runs[state.run]
        if isinstance(frame, (Hello, Bye)):
            self._check_run(run, now)
        if isinstance(frame, Bye):
            self._check_steps(run, run.steps.ready(run.running), now)
        if not isinstance(frame, Stats):
            return
        memory = self._memories(state)
        for rule in self.rank_rules:
            self._observe(rule, state, rule.check(state, memory[rule.name]), now)
        if self.run_rules:
            self._check_steps(run, run.steps.add(state.hello, frame, run.running), now)

    def _check_run(self, run: RunState, now: float) -> None:
        for rule in self.run_rules:
            memory = self._run_memory(run, rule)
            self._observe_run(rule, run, rule.check_run(run, memory, now), now)

    def _check_steps(self, run: RunState, steps: list[tuple[int, StepRanks]], now: float) -> None:
        for step, ranks in steps:
            for rule in self.run_rules:
                memory = self._run_memory(run, rule)
                found = rule.check_step(run, ranks, memory, now)
                if found is not None:
                    found = [f if f.step is not None else replace(f, step=step) for f in found]
                self._observe_run(rule, run, found, now)

    def tick(self, now: float | None = None) -> None:
        """Time-based rules, lifecycle timeouts, persistence and retention."""
        now = time.time() if now is None else now
        cfg = self.config
        for run in list(self.fleet.runs.values()):
            if not (run.ended and now - run.last_seen > cfg.grace_seconds):
                self._check_run(run, now)  # an ended run's alerts resolve with its ranks
            for state in list(run.ranks.values()):
                memory = self._memories(state)
                for rule in self.rank_rules:
                    self._observe(rule, state, rule.tick(state, memory[rule.name], now), now)
                key = f"{state.run}\0{state.rank}"
                if (
                    state.ended
                    and now - state.last_seen > cfg.grace_seconds
                    and key not in self._expired
                ):
                    self._expired.add(key)
                    self.book.resolve_rank(state.run, state.rank, now)
            if run.ended and now - run.last_seen > max(cfg.forget_seconds, cfg.grace_seconds):
                self.flush()
                for state in run.ranks.values():
                    self._memory.pop(state.hello.session, None)
                self.fleet.forget(run.name)
        self.flush()
        if now - self._last_prune > 3600:
            self._last_prune = now
            self.book.prune(cfg.retention_days * 86400, now)

    def flush(self) -> None:
        """Persist updated alerts and runs."""
        self.book.flush()
        if self.store is None or not self._dirty_runs:
            return
        live = (self.fleet.rank(run, rank) for run, rank in self._dirty_runs)
        records = [RunRecord.of(s) for s in live if s is not None]
        self._dirty_runs.clear()
        self.store.save_runs(records)
