"""The alert book: lifecycle (pending → firing → resolved), dedup, cooldown, persistence."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .alert import COLLECTOR_RUN, SEVERITIES, Alert, Severity
from .rules.base import Finding
from .store import Store, StoreError

log = logging.getLogger(__name__)

Fingerprint = tuple[str, str, int, str]
Listener = Callable[[Alert], None]
LimitHit = Callable[[str, int, str], None]
"""``(limit, value, detail)``: called when ``max_open_alerts`` keeps an alert from opening."""
CHANGE_LOG = 1024
"""Recent changes kept in memory: a stream client this far behind still gets every change."""
SEQ_COUNTER = "alert_seq"


@dataclass(frozen=True)
class Policy:
    """How the book treats one rule's findings (from the rule's settings)."""

    rule: str
    severity: Severity
    for_checks: int = 1
    clear_checks: int = 3
    cooldown_seconds: float = 300.0


class AlertBook:
    """Every open alert and the latest resolved ones, in memory and (when a store is given) in
    SQLite.

    ``observe`` is called by the ingest thread once per rule check of one rank; the API reads
    concurrently. Listeners run on the calling thread after the book's lock is released and
    must not block (queue work elsewhere). A failing store never loses an alert: it stays in
    memory, reaches the listeners all the same, and its write is retried on every ``flush``.

    ``max_open_alerts`` bounds the open alerts of one run (collector-level alerts excepted);
    ``max_resolved`` the resolved alerts held in memory (older ones stay in the database until
    the retention prunes them). None: no bound.
    """

    def __init__(
        self,
        store: Store | None = None,
        history_len: int = 32,
        *,
        max_open_alerts: int | None = None,
        max_resolved: int | None = None,
        on_limit: LimitHit | None = None,
    ) -> None:
        self.store = store
        self.history_len = history_len
        self.max_open_alerts, self.max_resolved = max_open_alerts, max_resolved
        self.on_limit = on_limit
        self._lock = threading.RLock()
        self._alerts: dict[int, Alert] = {}
        self._open: dict[Fingerprint, Alert] = {}
        self._open_by_run: Counter[str] = Counter()
        self._open_by_rank: dict[tuple[str, int], set[Fingerprint]] = {}
        """Open fingerprints per (run, rank): a check touches only its own rank's alerts."""
        self._holds: dict[Fingerprint, int] = {}
        self._clears: dict[Fingerprint, int] = {}
        self._resolved_at: dict[Fingerprint, float] = {}
        self._resolved_ids: dict[int, None] = {}
        """Ids of resolved alerts in memory, oldest first (a dict keeps insertion order)."""
        self._dirty: set[int] = set()
        self._deleted: set[int] = set()
        """Ids to delete from the store (pending alerts that never fired), not yet done."""
        self._listeners: list[Listener] = []
        self._next_id = 1
        self._seq = 0
        self._log: deque[Alert] = deque(maxlen=CHANGE_LOG)
        self._counter_due = False
        """The change counter must be written (a dropped alert's number)."""
        self._failing = False
        if store is not None:
            self._reload(store)

    def _reload(self, store: Store) -> None:
        for alert in store.load_alerts(resolved=self.max_resolved):
            self._alerts[alert.id] = alert
            if alert.state == "resolved":
                self._resolved_at[alert.fingerprint] = alert.resolved_at or alert.updated_at
                self._resolved_ids[alert.id] = None
            else:
                self._opened(alert)
                self._holds[alert.fingerprint] = 1 if alert.state == "pending" else 1 << 30
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

        Every change a listener (or stream) sees is written to the store first, so its number
        is not reused after a restart (a dropped alert's number is kept by the store's
        counter). While the store fails, changes still reach the listeners and are written
        when it recovers."""
        out: list[Alert] = []
        for alert in changed:
            self._seq += 1
            alert.seq = self._seq
            if alert.id in self._alerts:
                self._save(alert)
            else:
                self._counter_due = True
                self._persist([])
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
        back that far, else the latest state of every alert in memory changed since. Shared
        copies: do not modify them."""
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
        """Fold one check's findings for (rule, run, rank); open fingerprints not found clear."""
        now = time.time() if now is None else now
        changed: list[Alert] = []
        with self._lock:
            seen: set[Fingerprint] = set()
            for f in findings:
                fp = (policy.rule, run, rank, f.parameter or "")
                seen.add(fp)
                alert = self._open.get(fp)
                if alert is None:
                    if now < self._resolved_at.get(fp, -1e18) + policy.cooldown_seconds:
                        continue
                    if self._run_full(run, policy.rule, rank):
                        continue
                    alert = self._create(policy, run, rank, step, f, now)
                    self._holds[fp] = 0
                    changed.append(alert)
                self._update(alert, step, f, now)
                self._clears[fp] = 0
                self._holds[fp] += 1
                if alert.state == "pending" and self._holds[fp] >= policy.for_checks:
                    alert.state = "firing"
                    changed.append(alert)
            for fp in list(self._open_by_rank.get((run, rank), ())):
                if fp[0] == policy.rule and fp not in seen:
                    self._clears[fp] = self._clears.get(fp, 0) + 1
                    if self._clears[fp] >= policy.clear_checks:
                        changed.append(self._resolve(fp, now))
            unique = {id(a): a for a in changed}
            snapshot = self._stamp(unique.values())
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
            id=self._next_id,
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
        )
        self._next_id += 1
        self._alerts[alert.id] = alert
        self._opened(alert)
        return alert  # written with its change (_stamp); later updates on flush

    def _opened(self, alert: Alert) -> None:
        self._open[alert.fingerprint] = alert
        self._open_by_run[alert.run] += 1
        self._open_by_rank.setdefault((alert.run, alert.rank), set()).add(alert.fingerprint)

    def _update(self, alert: Alert, step: int, f: Finding, now: float) -> None:
        alert.step, alert.value, alert.threshold = step, f.value, f.threshold
        alert.message, alert.updated_at = f.message, now
        if f.severity and SEVERITIES.index(f.severity) > SEVERITIES.index(alert.severity):
            alert.severity = f.severity
        if f.value is not None:
            alert.history.append((step, f.value))
            del alert.history[: -self.history_len]
        self._dirty.add(alert.id)

    def _resolve(self, fp: Fingerprint, now: float) -> Alert:
        alert = self._open.pop(fp)
        self._open_by_run[alert.run] -= 1
        if self._open_by_run[alert.run] <= 0:
            del self._open_by_run[alert.run]
        same_rank = self._open_by_rank[alert.run, alert.rank]
        same_rank.discard(fp)
        if not same_rank:
            del self._open_by_rank[alert.run, alert.rank]
        self._holds.pop(fp, None)
        self._clears.pop(fp, None)
        was_pending = alert.state == "pending"
        alert.state, alert.resolved_at, alert.updated_at = "resolved", now, now
        if was_pending:  # it never fired: forget it rather than keep a false alarm
            self._alerts.pop(alert.id, None)
            self._dirty.discard(alert.id)
            self._deleted.add(alert.id)
            self._persist()
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
            if alert_id in self._dirty:
                continue  # not saved yet: it stays until it is
            del self._resolved_ids[alert_id]
            alert = self._alerts.pop(alert_id, None)
            if alert is not None and self._resolved_at.get(alert.fingerprint) == alert.resolved_at:
                del self._resolved_at[alert.fingerprint]

    def resolve_rank(self, run: str, rank: int, now: float | None = None) -> None:
        """Resolve every open alert of one rank (its run ended long enough ago)."""
        now = time.time() if now is None else now
        with self._lock:
            fps = list(self._open_by_rank.get((run, rank), ()))
            snapshot = self._stamp([self._resolve(fp, now) for fp in fps])
            self._trim()
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
                and (rank is None or a.rank == rank)
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

    def firing_by_rule(self) -> Counter[tuple[str, str, str]]:
        """Firing alerts per (rule, severity, run), in one pass."""
        with self._lock:
            return Counter(
                (a.rule, a.severity, a.run) for a in self._open.values() if a.state == "firing"
            )

    def idle_ranks(self, before: float) -> list[tuple[str, int]]:
        """Ranks whose open alerts were all last updated before ``before``."""
        with self._lock:
            return [
                key
                for key, fps in self._open_by_rank.items()
                if all(self._open[fp].updated_at < before for fp in fps)
            ]

    def firing_at(self, ranks: Iterable[tuple[str, int]]) -> Counter[tuple[str, int]]:
        """Firing alerts of each of ``ranks`` (run, rank): O(those ranks' open alerts)."""
        with self._lock:
            return Counter(
                {
                    key: sum(self._open[fp].state == "firing" for fp in fps)
                    for key in ranks
                    if (fps := self._open_by_rank.get(key))
                }
            )

    # -------------------------------------------------------------------- persistence

    @property
    def unsaved(self) -> int:
        """Alerts whose latest change is not in the database yet (the store failed)."""
        with self._lock:
            return len(self._dirty) + len(self._deleted) if self._failing else 0

    def _save(self, alert: Alert) -> None:
        self._dirty.add(alert.id)
        self._persist([alert.id])

    def _persist(self, ids: Iterable[int] | None = None) -> None:
        """Write the alerts ``ids`` (every changed one when None) and pending deletions; on a
        store failure keep them for the next flush and log it (once per failing spell)."""
        if self.store is None:
            self._dirty.clear()
            self._deleted.clear()
            self._counter_due = False
            return
        want = self._dirty if ids is None else self._dirty & set(ids)
        alerts = [self._alerts[i] for i in want if i in self._alerts]
        try:
            if self._deleted:
                self.store.delete_alerts(sorted(self._deleted))
                self._deleted.clear()
            if self._counter_due:
                self.store.save_counter(SEQ_COUNTER, self._seq)
                self._counter_due = False
            self.store.save_alerts(alerts)
        except StoreError as exc:
            if not self._failing:
                log.error("could not save alerts (kept in memory, retried): %s", exc)
            self._failing = True
            return
        self._dirty -= set(want)
        if self._failing and not self._dirty:
            self._failing = False
            log.info("alerts saved again: the database recovered")

    def flush(self) -> None:
        """Write alerts updated since the last flush (value, step, history), and any whose
        earlier write failed."""
        with self._lock:
            self._persist()

    def prune(self, retention_seconds: float, now: float | None = None) -> int:
        """Delete resolved alerts (and runs) older than the retention; return how many alerts."""
        cutoff = (time.time() if now is None else now) - retention_seconds
        with self._lock:
            ids = [
                a.id
                for a in self._alerts.values()
                if a.state == "resolved" and (a.resolved_at or 0.0) < cutoff
            ]
            for i in ids:
                del self._alerts[i]
                self._resolved_ids.pop(i, None)
                self._dirty.discard(i)
            if self.store is not None:
                try:
                    ids = sorted(set(ids) | set(self.store.prune(cutoff)))
                except StoreError as exc:
                    log.warning("could not prune the database (retried later): %s", exc)
                self._counter_due = True  # the newest alert may have been pruned
                self._persist([])
        return len(ids)


def describe(alert: Alert) -> str:
    """One console line for a person."""
    where = f"run={alert.run} rank={alert.rank} step={alert.step}"
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
