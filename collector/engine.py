"""Runs the rules over the fleet: on every stats frame, and on the collector's clock tick."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gradwatch.wire import Frame, Stats

from .book import AlertBook, Policy
from .config import CollectorConfig
from .rules import AnyRule
from .rules.base import Finding
from .run_record import RunRecord
from .state import Fleet, RankState
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
        self._memory: dict[str, dict[str, Any]] = {}
        self._dirty_runs: set[tuple[str, int]] = set()
        self._expired: set[str] = set()
        self._last_prune = 0.0
        self.frame_listeners: list[Callable[[RankState, Frame], None]] = []
        """Called with every frame before the rules judge it (the page's history)."""

    def _memories(self, state: RankState) -> dict[str, Any]:
        session = state.hello.session
        memory = self._memory.get(session)
        if memory is None:
            memory = self._memory[session] = {r.name: r.new_memory() for r in self.rules}
        return memory

    def _observe(
        self, rule: AnyRule, state: RankState, found: list[Finding] | None, now: float
    ) -> None:
        if found is None or (found and state.steps_seen < rule.settings.warmup_steps):
            return
        self.book.observe(
            self.policies[rule.name], state.run, state.rank, state.last_step, found, now
        )

    def on_frame(self, state: RankState, frame: Frame, now: float | None = None) -> None:
        """Judge a rank after one of its frames was applied to the fleet."""
        now = time.time() if now is None else now
        self._dirty_runs.add((state.run, state.rank))
        self._expired.discard(f"{state.run}\0{state.rank}")
        for listener in self.frame_listeners:
            listener(state, frame)
        if not isinstance(frame, Stats):
            return
        memory = self._memories(state)
        for rule in self.rules:
            self._observe(rule, state, rule.check(state, memory[rule.name]), now)

    def tick(self, now: float | None = None) -> None:
        """Time-based rules, lifecycle timeouts, persistence and retention."""
        now = time.time() if now is None else now
        cfg = self.config
        for run in list(self.fleet.runs.values()):
            for state in list(run.ranks.values()):
                memory = self._memories(state)
                for rule in self.rules:
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
