"""The alert book: one alert per job and cause; lifecycle (pending → firing → resolved), dedup,
cooldown, persistence."""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .alert import COLLECTOR_RUN, SEVERITIES, Alert, Severity
from .alert_log import SEQ_COUNTER, AlertLog
from .rules.base import Finding
from .store import Store

Fingerprint = tuple[str, str, str]
"""(rule, run, parameter or ""): one open alert each, whatever ranks it covers."""
LimitHit = Callable[[str, int, str], None]
"""``(limit, value, detail)``: called when ``max_open_alerts`` keeps an alert from opening."""


@dataclass
class RankTrack:
    """How one open alert stands on each rank it covers (in memory only)."""

    holds: dict[int, int] = field(default_factory=dict)
    """Checks that found the condition, per rank (it fires once one reaches ``for_checks``);
    its keys are the ranks the alert covers."""
    clears: dict[int, int] = field(default_factory=dict)
    """Checks in a row that did not, per rank."""
    done: set[int] = field(default_factory=set)
    """Ranks clear for ``clear_checks`` checks, or ended: it resolves once all are."""
    claim: float | None = None
    """The origin's claim, the step its condition started at (an earlier one takes over);
    None: the origin is only the first rank seen; -inf: fixed (reloaded)."""


@dataclass(frozen=True)
class Policy:
    """How the book treats one rule's findings (from the rule's settings)."""

    rule: str
    severity: Severity
    for_checks: int = 1
    clear_checks: int = 3
    cooldown_seconds: float = 300.0


class AlertBook(AlertLog):
    """Every open alert and the latest resolved ones, in memory and (when a store is given) in
    SQLite.

    ``observe`` is called by the ingest thread once per rule check of one rank (``observe_run``
    once per check of a run-level rule); the API reads concurrently. Findings of one rule on
    several ranks of a run for the same parameter join one alert (``Alert.ranks``). Keeping,
    numbering, saving and announcing the alerts is :class:`AlertLog`'s.

    ``origin_seconds``: how long after an alert opens a rank with an earlier claim to be its
    origin takes its ``rank`` over. ``max_open_alerts`` bounds the open alerts of one run
    (collector-level alerts excepted); ``max_resolved`` the resolved alerts held in memory
    (older ones stay in the database until the retention prunes them). None: no bound.
    ``judges``: see the attribute.
    """

    def __init__(
        self,
        store: Store | None = None,
        history_len: int = 32,
        *,
        origin_seconds: float = 60.0,
        max_open_alerts: int | None = None,
        max_resolved: int | None = None,
        on_limit: LimitHit | None = None,
        judges: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(store)
        self.judges = judges
        """The runs whose findings this book turns into alerts (None: all); with
        ``--workers`` the other runs' alerts are other books' (kept here by ``mirror``)."""
        self.history_len = history_len
        self.origin_seconds = origin_seconds
        self.max_open_alerts, self.max_resolved = max_open_alerts, max_resolved
        self.on_limit = on_limit
        self._open: dict[Fingerprint, Alert] = {}
        self._open_by_run: Counter[str] = Counter()
        self._open_by_rank: dict[tuple[str, int], set[Fingerprint]] = {}
        """Open fingerprints per (run, rank) covered: a check touches only its rank's alerts."""
        self._ranks: dict[Fingerprint, RankTrack] = {}
        self._resolved_at: dict[Fingerprint, float] = {}
        if store is not None:
            self._reload(store)

    def _reload(self, store: Store, others: bool = True) -> None:
        """Load the saved alerts: those of the runs this book ``judges`` take up their
        lifecycle; the others are kept as records (``others``) or left out."""
        judges = self.judges
        for alert in store.load_alerts(resolved=self.max_resolved):
            mine = judges is None or judges(alert.run)
            if not (mine or others):
                continue
            self._alerts[alert.id] = alert
            fp = alert.fingerprint
            if mine and alert.state != "resolved" and fp in self._open:  # per-rank alerts of old
                alert.state, alert.resolved_at = "resolved", alert.updated_at
                self._save(alert)
            if alert.state == "resolved":
                if mine:
                    self._resolved_at[fp] = alert.resolved_at or alert.updated_at
                self._resolved_ids[alert.id] = None
            elif mine:
                held = 1 if alert.state == "pending" else 1 << 30
                self._opened(alert, RankTrack({r: held for r in alert.covers}, claim=-math.inf))
        self._next_id = self._id_after(max(store.max_alert_id(), max(self._alerts, default=0)))
        seqs = (a.seq for a in self._alerts.values())
        self._seq = max(store.counter(SEQ_COUNTER), max(seqs, default=0))

    def adopt(self, store: Store) -> None:
        """Take up the saved alerts of the runs this book judges, from a database another
        process writes (a ``--workers`` worker's book, which saves nothing itself)."""
        with self._lock:
            self._reload(store, others=False)

    # -------------------------------------------------------------------- lifecycle

    def observe(
        self,
        policy: Policy,
        run: str,
        rank: int,
        step: int,
        findings: list[Finding],
        now: float | None = None,
    ) -> None:
        """Fold one check of one rank (a per-rank rule): each finding opens the alert of its
        rule, run and parameter, or joins it; the rank clears from the run's alerts of the rule
        it is no longer found in."""
        if not findings and (run, rank) not in self._open_by_rank:
            return  # nothing found, nothing open on this rank: nothing changes (the hot path)
        self._fold(policy, run, [(rank, step, f) for f in findings], {rank}, False, now)

    def observe_run(
        self,
        policy: Policy,
        run: str,
        findings: list[tuple[int, int, Finding]],
        now: float | None = None,
    ) -> None:
        """Fold one check of a whole run (a run-level rule): ``(rank, step, finding)`` each;
        every rank of the rule's open alerts on the run not found clears. The rule names the
        origin (``Finding.origin``): it takes over the alert's ``rank`` while the alert is
        young."""
        self._fold(policy, run, findings, None, True, now)

    def _fold(
        self,
        policy: Policy,
        run: str,
        items: list[tuple[int, int, Finding]],
        judged: set[int] | None,
        authoritative: bool,
        now: float | None,
    ) -> None:
        now = time.time() if now is None else now
        changed: list[Alert] = []
        with self._lock:
            seen: dict[Fingerprint, set[int]] = {}
            for rank, step, f in items:
                fp = (policy.rule, run, f.parameter or "")
                alert = self._open.get(fp)
                if alert is None:
                    if now < self._resolved_at.get(fp, -1e18) + policy.cooldown_seconds:
                        continue
                    if self._run_full(run, policy.rule, rank):
                        continue
                    alert = self._create(policy, run, rank, step, f, now)
                    changed.append(alert)
                seen.setdefault(fp, set()).add(rank)
                track = self._ranks[fp]
                if self._join(alert, track, rank, step, f, now, authoritative):
                    changed.append(alert)
                track.clears[rank] = 0
                track.done.discard(rank)
                track.holds[rank] = track.holds.get(rank, 0) + 1
                if alert.state == "pending" and track.holds[rank] >= policy.for_checks:
                    alert.state = "firing"
                    changed.append(alert)
            if judged is None:
                fps = [fp for fp in self._open if fp[:2] == (policy.rule, run)]
            else:  # one rank's check touches only that rank's alerts
                fps = [fp for r in judged for fp in self._open_by_rank.get((run, r), ())]
            for fp in dict.fromkeys(fps):
                if fp[0] != policy.rule or fp not in self._open:
                    continue
                track, found = self._ranks[fp], seen.get(fp, set())
                for r in track.holds if judged is None else judged & track.holds.keys():
                    if r not in found:
                        track.clears[r] = track.clears.get(r, 0) + 1
                        if track.clears[r] >= policy.clear_checks:
                            track.done.add(r)
                if len(track.done) >= len(track.holds):
                    changed.append(self._resolve(fp, now))
            unique = {id(a): a for a in changed}
            snapshot = self._stamp(unique.values()) if unique else []
            self._trim()
        self._notify(snapshot)

    def _run_full(self, run: str, rule: str, rank: int) -> bool:
        """``max_open_alerts`` reached for ``run``: report it and open nothing."""
        cap = self.max_open_alerts
        if cap is None or run == COLLECTOR_RUN or self._open_by_run[run] < cap:
            return False
        if self.on_limit is not None:
            self.on_limit("max_open_alerts", cap, f"{rule} on {run}/{rank}: {cap} alerts open")
        return True

    def _create(
        self, policy: Policy, run: str, rank: int, step: int, f: Finding, now: float
    ) -> Alert:
        alert = Alert(
            id=self._new_id(),
            rule=policy.rule,
            severity=f.severity or policy.severity,
            state="firing" if policy.for_checks <= 1 else "pending",
            run=run,
            rank=rank,
            parameter=f.parameter,
            step=step,
            first_step=step if f.onset is None else min(f.onset, step),
            value=f.value,
            threshold=f.threshold,
            message=f.message,
            action=f.action,
            started_at=now,
            updated_at=now,
            ranks=[rank],
        )
        self._alerts[alert.id] = alert
        self._opened(alert, RankTrack({rank: 0}))
        return alert  # written with its change (_stamp); later updates on flush

    def _opened(self, alert: Alert, track: RankTrack) -> None:
        fp = alert.fingerprint
        self._open[fp] = alert
        self._ranks[fp] = track
        self._open_by_run[alert.run] += 1
        for rank in track.holds:
            self._open_by_rank.setdefault((alert.run, rank), set()).add(fp)

    def _join(
        self,
        alert: Alert,
        track: RankTrack,
        rank: int,
        step: int,
        f: Finding,
        now: float,
        authoritative: bool,
    ) -> bool:
        """Fold ``rank``'s finding into ``alert``; True when its ranks or origin changed."""
        changed = False
        if rank not in track.holds:  # its keys are the ranks covered
            if not alert.ranks:
                alert.ranks = [alert.rank]
            bisect.insort(alert.ranks, rank)
            self._open_by_rank.setdefault((alert.run, rank), set()).add(alert.fingerprint)
            changed = True
        if f.origin:
            claim = step if f.claim_step is None else f.claim_step
            young = now - alert.started_at <= self.origin_seconds
            if rank == alert.rank:
                track.claim = claim if track.claim is None else min(track.claim, claim)
            elif young and (authoritative or track.claim is None or claim < track.claim):
                alert.rank, track.claim = rank, claim
                alert.first_step = min(alert.first_step, claim)
                changed = True
        if rank == alert.rank or track.clears.get(alert.rank, 0) > 0:  # the origin, or it cleared
            self._update(alert, step, f, now)
        else:
            alert.updated_at = now
            self._raise_severity(alert, f)
            self._dirty.add(alert.id)
        return changed

    def _update(self, alert: Alert, step: int, f: Finding, now: float) -> None:
        alert.step, alert.value, alert.threshold = step, f.value, f.threshold
        alert.message, alert.updated_at = f.message, now
        self._raise_severity(alert, f)
        if f.value is not None:
            alert.history.append((step, f.value))
            del alert.history[: -self.history_len]
        self._dirty.add(alert.id)

    @staticmethod
    def _raise_severity(alert: Alert, f: Finding) -> None:
        if f.severity and SEVERITIES.index(f.severity) > SEVERITIES.index(alert.severity):
            alert.severity = f.severity

    def _resolve(self, fp: Fingerprint, now: float) -> Alert:
        alert = self._open.pop(fp)
        self._open_by_run[alert.run] -= 1
        if self._open_by_run[alert.run] <= 0:
            del self._open_by_run[alert.run]
        for rank in self._ranks.pop(fp).holds:
            same_rank = self._open_by_rank[alert.run, rank]
            same_rank.discard(fp)
            if not same_rank:
                del self._open_by_rank[alert.run, rank]
        was_pending = alert.state == "pending"
        alert.state, alert.resolved_at, alert.updated_at = "resolved", now, now
        if was_pending:  # it never fired: forget it rather than keep a false alarm
            self._alerts.pop(alert.id, None)
            self._dirty.discard(alert.id)
            self._deleted.add(alert.id)
            self._persist_soon()
        else:
            self._resolved_at[fp] = now  # written with its change (_stamp)
            self._resolved_ids[alert.id] = None
        return alert

    def _trim(self) -> None:
        """Keep at most ``max_resolved`` resolved alerts in memory (saved ones leave first)."""
        if self.max_resolved is None:
            return
        extra = len(self._resolved_ids) - self.max_resolved
        for alert_id in list(self._resolved_ids)[: max(extra, 0)]:
            if alert_id in self._dirty or alert_id in self._inflight:
                continue  # not saved yet: it stays until it is
            del self._resolved_ids[alert_id]
            alert = self._alerts.pop(alert_id, None)
            if alert is not None and self._resolved_at.get(alert.fingerprint) == alert.resolved_at:
                del self._resolved_at[alert.fingerprint]

    def resolve_rank(self, run: str, rank: int, now: float | None = None) -> None:
        """Clear one rank from every open alert covering it (its run ended long enough ago);
        alerts whose ranks have all cleared resolve."""
        now = time.time() if now is None else now
        with self._lock:
            resolved = []
            for fp in list(self._open_by_rank.get((run, rank), ())):
                track = self._ranks[fp]
                track.done.add(rank)
                if len(track.done) >= len(track.holds):
                    resolved.append(self._resolve(fp, now))
            snapshot = self._stamp(resolved)
            self._trim()
        self._notify(snapshot)

    # -------------------------------------------------------------------- reads

    def firing_by_rule(self) -> Counter[tuple[str, str, str]]:
        """Firing alerts per (rule, severity, run), in one pass."""
        with self._lock:
            return Counter(
                (a.rule, a.severity, a.run) for a in self._open.values() if a.state == "firing"
            )

    def idle_ranks(self, before: float) -> list[tuple[str, int]]:
        """Ranks whose open alerts (those covering them) were all last updated before
        ``before``."""
        with self._lock:
            return [
                key
                for key, fps in self._open_by_rank.items()
                if all(self._open[fp].updated_at < before for fp in fps)
            ]

    def firing_at(self, ranks: Iterable[tuple[str, int]]) -> Counter[tuple[str, int]]:
        """Firing alerts covering each of ``ranks`` (run, rank): O(those ranks' open alerts)."""
        with self._lock:
            return Counter(
                {
                    key: sum(self._open[fp].state == "firing" for fp in fps)
                    for key in ranks
                    if (fps := self._open_by_rank.get(key))
                }
            )
