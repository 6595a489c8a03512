"""Where the alert book keeps its alerts: in memory and in SQLite, every change numbered,
logged and announced to the listeners; reads, acks, flushes and pruning."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .alert import Alert
from .store import ALERTS, Store, StoreError

log = logging.getLogger(__name__)

Listener = Callable[[Alert], None]
CHANGE_LOG = 1024
"""Recent changes kept in memory: a stream client this far behind still gets every change."""
SEQ_COUNTER = "alert_seq"
SEQ_BLOCK = 1024
"""With writes in the background, change numbers are reserved in the store this many at a
time before they are handed out: a crash never lets a restarted collector reuse a number a
client has seen (it skips at most this many)."""


@dataclass
class Batch:
    """Alert changes taken for one background write (rows copied under the lock)."""

    ids: set[int] = field(default_factory=set)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)
    counter: int | None = None
    """The change counter to save, when due."""


class AlertLog:
    """Every alert in memory and (when a store is given) in SQLite, under one lock.

    Every change (state, ranks, origin, ack) gets the next number of a persisted sequence, is
    written to the store and logged for ``changes_since``; listeners run on the calling thread
    after the lock is released and must not block (queue work elsewhere). A failing store never
    loses an alert: it stays in memory, reaches the listeners all the same, and its write is
    retried on every ``flush``. The lifecycle is the subclass's (:class:`AlertBook`).
    """

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self._lock = threading.RLock()
        self._alerts: dict[int, Alert] = {}
        self._resolved_ids: dict[int, None] = {}
        """Ids of resolved alerts in memory, oldest first (a dict keeps insertion order)."""
        self._dirty: set[int] = set()
        self._deleted: set[int] = set()
        """Ids to delete from the store (pending alerts that never fired), not yet done."""
        self._listeners: list[Listener] = []
        self._id_slot, self._id_stride = 0, 1
        self._next_id = 1
        self._seq = 0
        self._log: deque[Alert] = deque(maxlen=CHANGE_LOG)
        self._counter_due = False
        """The change counter must be written (a dropped alert's number)."""
        self._failing = False
        self._wake: Callable[[], None] | None = None
        """Set by :meth:`write_behind`: writes are the writer thread's, this wakes it."""
        self._reserved = 0
        """Change numbers up to this are reserved in the store (background writes)."""
        self._inflight: set[int] = set()
        """Alerts whose rows a background write holds right now."""
        self.forward: Callable[[list[Alert]], None] | None = None
        """A ``--workers`` worker's book (no store): at each flush, the alerts updated since
        (step, value, history: no numbered change) go here, to the main process."""

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

    # -------------------------------------------------------------------- alert ids

    def share_ids(self, slot: int, stride: int) -> None:
        """Hand out only ids ``slot + 1 + k * stride``: the books of ``--workers`` processes
        (and the main one's) number alerts in one space without meeting."""
        with self._lock:
            self._id_slot, self._id_stride = slot, stride
            self._next_id = self._id_after(self._next_id - 1)

    def _id_after(self, taken: int) -> int:
        """The first id of this book's slot above ``taken``."""
        base = self._id_slot + 1
        return base + max(0, -(-(taken + 1 - base) // self._id_stride)) * self._id_stride

    def _new_id(self) -> int:
        alert_id = self._next_id
        self._next_id += self._id_stride
        return alert_id

    def mirror(self, alert: Alert, dropped: bool = False) -> Alert:
        """Keep a change another process's book made (``--workers``): number, save and
        announce it as this book's own. An ack given here stays (the worker does not know of
        it); a ``dropped`` alert (pending, never fired) is deleted."""
        with self._lock:
            held = self._alerts.get(alert.id)
            alert.acked = alert.acked or (held is not None and held.acked)
            if dropped:
                self._alerts.pop(alert.id, None)
                self._resolved_ids.pop(alert.id, None)
                self._dirty.discard(alert.id)
                self._deleted.add(alert.id)
            else:
                self._alerts[alert.id] = alert
                if alert.state == "resolved":
                    self._resolved_ids[alert.id] = None
            snapshot = self._stamp([alert])
            self._trim()
        self._notify(snapshot)
        return snapshot[0]

    def mirror_updates(self, alerts: Iterable[Alert]) -> None:
        """Keep the updates another process's book flushed (``forward``): saved, not numbered
        or announced (as this book's own updates)."""
        with self._lock:
            for alert in alerts:
                held = self._alerts.get(alert.id)
                if held is None:  # pruned, or dropped meanwhile
                    continue
                alert.seq, alert.acked = held.seq, held.acked or alert.acked
                self._alerts[alert.id] = alert
                self._dirty.add(alert.id)
            self._persist_soon()

    def _trim(self) -> None:
        """Bound the resolved alerts held in memory (the lifecycle's, :class:`AlertBook`)."""

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
            if self._wake is not None and self._seq > self._reserved:
                self._reserve()
            if alert.id in self._alerts:
                self._save(alert)
            else:
                self._counter_due = True
                self._persist_soon([])
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

    # -------------------------------------------------------------------- persistence

    @property
    def unsaved(self) -> int:
        """Alerts whose latest change is not in the database yet (the store failed)."""
        with self._lock:
            pending = len(self._dirty | self._inflight) + len(self._deleted)
            return pending if self._failing else 0

    def _save(self, alert: Alert) -> None:
        self._dirty.add(alert.id)
        self._persist_soon([alert.id])

    def _persist_soon(self, ids: Iterable[int] | None = None) -> None:
        """Write now (``_persist``), or wake the background writer."""
        if self._wake is None:
            self._persist(ids)
        else:
            self._wake()

    def write_behind(self, wake: Callable[[], None]) -> None:
        """From now on a writer thread saves changes (``take``/``done``/``put_back``);
        ``wake()`` tells it there is work. Listeners hear of a change without waiting for it."""
        with self._lock:
            self._wake = wake
            self._reserve()

    def write_through(self) -> None:
        """The writer thread is stopping: give back the unused reserved numbers (the next
        write saves the counter as the latest change's, so a clean restart numbers on from
        there) and write on the calling thread again."""
        with self._lock:
            self._wake = None
            if self._reserved > self._seq:
                self._reserved = self._seq
                self._counter_due = True

    def _reserve(self) -> None:
        """Reserve the next SEQ_BLOCK change numbers in the store (lock held); on a store
        failure the numbers are still handed out (and the counter written when it recovers)."""
        self._reserved = self._seq + SEQ_BLOCK
        if self.store is None:
            return
        try:
            self.store.save_counter(SEQ_COUNTER, self._reserved)
        except StoreError:
            self._counter_due = True

    def take(self) -> Batch:
        """The changes to write now (they leave the dirty set; ``put_back`` on failure)."""
        with self._lock:
            ids, self._dirty = self._dirty, set()
            rows = [ALERTS.row(self._alerts[i]) for i in ids if i in self._alerts]
            deleted, self._deleted = self._deleted, set()
            counter = max(self._seq, self._reserved) if self._counter_due else None
            self._counter_due = False
            self._inflight = ids
            return Batch(ids, rows, deleted, counter)

    def done(self, batch: Batch) -> None:
        """``batch`` is in the store."""
        with self._lock:
            self._inflight = set()
            if self._failing and not self._dirty and not self._deleted:
                self._failing = False
                log.info("alerts saved again: the database recovered")

    def put_back(self, batch: Batch, exc: StoreError) -> None:
        """Writing ``batch`` failed: keep it for the next write, and say so (once a spell)."""
        with self._lock:
            self._inflight = set()
            self._dirty |= {i for i in batch.ids if i in self._alerts}
            self._deleted |= batch.deleted
            self._counter_due = self._counter_due or batch.counter is not None
            if not self._failing:
                log.error("could not save alerts (kept in memory, retried): %s", exc)
            self._failing = True

    def _persist(self, ids: Iterable[int] | None = None) -> None:
        """Write the alerts ``ids`` (every changed one when None) and pending deletions; on a
        store failure keep them for the next flush and log it (once per failing spell)."""
        if self.store is None:
            if ids is not None:  # a numbered change: its listeners have it
                self._dirty -= set(ids)
                return
            if self.forward is not None and self._dirty:
                self.forward(
                    [self._copy(self._alerts[i]) for i in self._dirty if i in self._alerts]
                )
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
        earlier write failed (with a writer thread: wake it)."""
        if self._wake is not None:
            self._wake()
            return
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
                self._persist_soon([])
        return len(ids)
