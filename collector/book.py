"""The alert book: lifecycle (pending → firing → resolved), dedup, cooldown, persistence."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .alert import SEVERITIES, Alert, Severity
from .rank_ranges import compact_ranks
from .rules.base import Finding
from .store import Store

log = logging.getLogger(__name__)

Fingerprint = tuple[str, str, str]
"""(rule, run, parameter or ""): one open alert each, whatever ranks it covers."""
Listener = Callable[[Alert], None]
CHANGE_LOG = 1024
"""Recent changes kept in memory: a stream client this far behind still gets every change."""
SEQ_COUNTER = "alert_seq"


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


class AlertBook:
    """Every alert, in memory and (when a store is given) in SQLite.

    ``observe`` is called by the ingest thread once per rule check of one rank; the API reads
    concurrently. Listeners run on the calling thread after the book's lock is released and
    must not block (queue work elsewhere).
    """

    def __init__(
        self, store: Store | None = None, history_len: int = 32, origin_seconds: float = 60.0
    ) -> None:
        self.store = store
        self.history_len = history_len
        self.origin_seconds = origin_seconds
        self._lock = threading.RLock()
        self._alerts: dict[int, Alert] = {}
        self._open: dict[Fingerprint, Alert] = {}
        self._ranks: dict[Fingerprint, RankTrack] = {}
        self._resolved_at: dict[Fingerprint, float] = {}
        self._dirty: set[int] = set()
        self._listeners: list[Listener] = []
        self._next_id = 1
        self._seq = 0
        self._log: deque[Alert] = deque(maxlen=CHANGE_LOG)
        if store is not None:
            self._reload(store)

    def _reload(self, store: Store) -> None:
        for alert in store.load_alerts():
            self._alerts[alert.id] = alert
            fp = alert.fingerprint
            if alert.state != "resolved" and fp in self._open:  # per-rank alerts of old
                alert.state, alert.resolved_at = "resolved", alert.updated_at
                store.save_alerts([alert])
            if alert.state == "resolved":
                self._resolved_at[fp] = alert.resolved_at or alert.updated_at
            else:
                self._open[fp] = alert
                held = 1 if alert.state == "pending" else 1 << 30
                self._ranks[fp] = RankTrack({r: held for r in alert.covers}, claim=-math.inf)
        self._next_id = max(store.max_alert_id(), max(self._alerts, default=0)) + 1
        seqs = (a.seq for a in self._alerts.values())
        self._seq = max(store.counter(SEQ_COUNTER), max(seqs, default=0))

    # -------------------------------------------------------------------- listeners

    def subscribe(self, callback: Listener) -> None:
        """Call ``callback(alert_copy)`` on every state change (and on ack)."""
        self._listeners.append(callback)

    def _notify(self, changed: Iterable[Alert]) -> None:
        for alert in changed:
            for listener in self._listeners:
                try:
                    listener(alert)
                except Exception:  # a broken listener must not stop ingest
                    log.exception("alert listener %r failed", listener)

    @staticmethod
    def _copy(alert: Alert) -> Alert:
        return dataclasses.replace(alert, history=list(alert.history))

    # -------------------------------------------------------------------- change sequence

    def _stamp(self, changed: Iterable[Alert]) -> list[Alert]:
        """Number each change, persist it and log it (lock held); the copies are for listeners.

        Every change a listener (or stream) sees is in the store first, so its number is never
        reused after a restart; a dropped alert's number is kept by the store's counter."""
        out: list[Alert] = []
        for alert in changed:
            self._seq += 1
            alert.seq = self._seq
            if alert.id in self._alerts:
                self._save(alert)
            elif self.store is not None:
                self.store.save_counter(SEQ_COUNTER, self._seq)
            out.append(self._copy(alert))
        self._log.extend(out)
        return out

    @property
    def seq(self) -> int:
        """The number of the latest change (0: none yet)."""
        with self._lock:
            return self._seq

    def changes_since(self, seq: int) -> list[Alert]:
        """Changes numbered above ``seq``, oldest first: each change while the recent log reaches
        back that far, else the latest state of every alert changed since (what the store holds).
        Shared copies: do not modify them."""
        with self._lock:
            if seq >= self._seq:
                return []
            if self._log and self._log[0].seq <= seq + 1:
                return list(itertools.islice(self._log, seq + 1 - self._log[0].seq, None))
            out = [self._copy(a) for a in self._alerts.values() if a.seq > seq]
        out.sort(key=lambda a: a.seq)
        return out

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
            for fp in [fp for fp in self._open if fp[:2] == (policy.rule, run)]:
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
        self._notify(snapshot)

    def _create(
        self, policy: Policy, run: str, rank: int, step: int, f: Finding, now: float
    ) -> Alert:
        alert = Alert(
            id=self._next_id,
            rule=policy.rule,
            severity=f.severity or policy.severity,
            state="firing" if policy.for_checks <= 1 else "pending",
            run=run,
            rank=rank,
            parameter=f.parameter,
            step=step,
            first_step=step,
            value=f.value,
            threshold=f.threshold,
            message=f.message,
            action=f.action,
            started_at=now,
            updated_at=now,
            ranks=[rank],
        )
        self._next_id += 1
        self._alerts[alert.id] = alert
        self._open[alert.fingerprint] = alert
        self._ranks[alert.fingerprint] = RankTrack({rank: 0})
        return alert  # written with its change (_stamp); later updates on flush

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
        origin_clear = track.clears.get(alert.rank, 0) > 0
        if rank == alert.rank or origin_clear:
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
        self._ranks.pop(fp, None)
        was_pending = alert.state == "pending"
        alert.state, alert.resolved_at, alert.updated_at = "resolved", now, now
        if was_pending:  # it never fired: forget it rather than keep a false alarm
            self._alerts.pop(alert.id, None)
            self._dirty.discard(alert.id)
            if self.store is not None:
                self.store.delete_alerts([alert.id])
        else:
            self._resolved_at[fp] = now  # written with its change (_stamp)
        return alert

    def resolve_rank(self, run: str, rank: int, now: float | None = None) -> None:
        """Clear one rank from every open alert of its run (it ended long enough ago); alerts
        whose ranks have all cleared resolve."""
        now = time.time() if now is None else now
        with self._lock:
            resolved = []
            for fp, alert in list(self._open.items()):
                if alert.run != run or rank not in self._ranks[fp].holds:
                    continue
                track = self._ranks[fp]
                track.done.add(rank)
                if len(track.done) >= len(track.holds):
                    resolved.append(self._resolve(fp, now))
            snapshot = self._stamp(resolved)
        self._notify(snapshot)

    # -------------------------------------------------------------------- reads and acks

    def alerts(
        self,
        state: str | None = None,
        *,
        run: str | None = None,
        rank: int | None = None,
        rule: str | None = None,
        severity: str | None = None,
        since: float | None = None,
    ) -> list[Alert]:
        """Matching alerts, newest first (copies)."""
        with self._lock:
            out = [
                self._copy(a)
                for a in self._alerts.values()
                if (state is None or a.state == state)
                and (run is None or a.run == run)
                and (rank is None or rank in a.covers)
                and (rule is None or a.rule == rule)
                and (severity is None or a.severity == severity)
                and (since is None or a.updated_at >= since)
            ]
        out.sort(key=lambda a: (a.started_at, a.id), reverse=True)
        return out

    def get(self, alert_id: int) -> Alert | None:
        with self._lock:
            alert = self._alerts.get(alert_id)
            return None if alert is None else self._copy(alert)

    def ack(self, alert_id: int) -> Alert | None:
        """Mark an alert acknowledged; None when there is no such alert."""
        with self._lock:
            alert = self._alerts.get(alert_id)
            if alert is None:
                return None
            if alert.acked:  # nothing changes
                return self._copy(alert)
            alert.acked = True
            snapshot = self._stamp([alert])
        self._notify(snapshot)
        return snapshot[0]

    def firing_count(self, run: str, rank: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for a in self._open.values()
                if a.state == "firing" and a.run == run and (rank is None or rank in a.covers)
            )

    # -------------------------------------------------------------------- persistence

    def _save(self, alert: Alert) -> None:
        self._dirty.discard(alert.id)
        if self.store is not None:
            self.store.save_alerts([alert])

    def flush(self) -> None:
        """Write alerts updated since the last flush (value, step, history)."""
        with self._lock:
            dirty = [self._alerts[i] for i in self._dirty if i in self._alerts]
            self._dirty.clear()
            if self.store is not None:
                self.store.save_alerts(dirty)

    def prune(self, retention_seconds: float, now: float | None = None) -> int:
        """Delete resolved alerts older than the retention; return how many."""
        cutoff = (time.time() if now is None else now) - retention_seconds
        with self._lock:
            ids = [
                a.id
                for a in self._alerts.values()
                if a.state == "resolved" and (a.resolved_at or 0.0) < cutoff
            ]
            for i in ids:
                del self._alerts[i]
            if self.store is not None:
                ids = sorted(set(ids) | set(self.store.prune(cutoff)))
                self.store.save_counter(SEQ_COUNTER, self._seq)  # it may have been the newest
        return len(ids)


def describe(alert: Alert) -> str:
    """One console line for a person."""
    where = f"run={alert.run} rank={alert.rank} step={alert.step}"
    if len(alert.covers) > 1:
        where += f" ranks={compact_ranks(alert.covers)}"
    if alert.parameter:
        where += f" param={alert.parameter}"
    if alert.state == "resolved":
        return f"RESOLVED {alert.rule} [{alert.severity}] #{alert.id} {where}"
    head = f"ALERT {alert.rule} [{alert.severity}] #{alert.id} {where}"
    return f"{head}: {alert.message} — {alert.action}"


class ConsoleLog:
    """A listener that logs one line when an alert starts firing and when it resolves."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("gradwatch.collector.alerts")
        self._logged: dict[int, str] = {}

    def __call__(self, alert: Alert) -> None:
        if alert.state == "pending" or self._logged.get(alert.id) == alert.state:
            return
        if alert.state == "resolved" and alert.id not in self._logged:
            return  # a pending alert that never fired
        self._logged[alert.id] = alert.state
        if alert.state == "resolved":
            del self._logged[alert.id]
            self.logger.info(describe(alert))
        else:
            self.logger.warning(describe(alert))
