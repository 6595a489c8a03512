"""The back channel: firing alerts go back to every rank of their run as ``action`` messages.

Agents connect a DEALER to the ingest ROUTER, so each frame arrives with its peer's routing
identity; :meth:`BackChannel.learn` keeps the latest one per (run, rank). The alert book calls
the channel (a listener) when an alert starts firing; the ingest thread, which owns the
socket, sends what is queued after each batch of frames (:meth:`BackChannel.send_due`).
Sending never blocks ingest: the ROUTER drops a message for a peer that is gone or whose
queue is full (``ZMQ_ROUTER_MANDATORY`` off), and the channel only counts what it handed over.

Every firing alert is sent, with its rule's policy (``action``: ``notify`` unless the rule's
settings say ``stop`` or ``checkpoint``): an agent may act on an alert the collector only
reports (``watch(on_alert=...)``, ``monitor.on_alert(fn)``).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping

from gradwatch import wire
from gradwatch.wire import metrics as m

from .alert import Alert
from .fired import FiredOnce
from .fleet import Fleet
from .rules.base import median
from .state import RunState

log = logging.getLogger(__name__)

Send = Callable[[bytes, bytes], None]
"""``send(identity, payload)``: hand one message to the socket (never blocks)."""
QUEUED = 1024
"""Alerts waiting for the ingest thread; beyond it the oldest are dropped (and counted)."""


class BackChannel:
    """Who each (run, rank) is on the socket, and the firing alerts still to tell them."""

    def __init__(
        self, fleet: Fleet, policies: Mapping[str, str], lead_seconds: float = 2.0
    ) -> None:
        self.fleet = fleet
        self.policies = dict(policies)
        """The ``action`` of each rule, by rule name."""
        self.lead_seconds = lead_seconds
        self.sent = 0
        """Action messages handed to the socket (one per rank told)."""
        self.dropped = 0
        """Alerts dropped from a full queue before the ingest thread sent them."""
        self._peers: dict[tuple[str, int], bytes] = {}
        self._queue: deque[Alert] = deque()
        self._fired = FiredOnce()
        self._lock = threading.Lock()

    @property
    def pending(self) -> bool:
        """Alerts are queued for :meth:`send_due`."""
        return bool(self._queue)

    def learn(self, identity: bytes, frame: wire.Frame) -> None:
        """An accepted frame arrived from ``identity`` (ingest thread)."""
        self._peers[frame.run, frame.rank] = identity

    def __call__(self, alert: Alert) -> None:
        """Book listener: queue an alert the first time it is seen firing."""
        if not self._fired.first(alert):
            return
        with self._lock:
            if len(self._queue) >= QUEUED:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(alert)

    def send_due(self, send: Send) -> None:
        """Tell every known rank of each queued alert's run (ingest thread); ``sent`` counts
        the messages handed to ``send``."""
        if not self._queue:
            return
        with self._lock:
            alerts, self._queue = list(self._queue), deque()
        n = 0
        for alert in alerts:
            run = self.fleet.runs.get(alert.run)
            if run is None:
                continue
            payload = wire.encode_action(self.action_of(alert, run))
            told = 0
            for rank in run.ranks:
                identity = self._peers.get((alert.run, rank))
                if identity is not None:
                    send(identity, payload)
                    told += 1
            n += told
            log.info(
                "alert #%d %s: told %d rank(s) of run %s to %s",
                alert.id, alert.rule, told, alert.run, self.policies.get(alert.rule, "notify"),
            )  # fmt: skip
        self.sent += n
        self._forget_gone()

    def action_of(self, alert: Alert, run: RunState) -> wire.Action:
        return wire.Action(
            run=alert.run,
            rank=alert.rank,
            alert=alert.id,
            rule=alert.rule,
            severity=alert.severity,
            action=self.policies.get(alert.rule, "notify"),
            step=alert.step,
            at_step=self.at_step(run),
            message=alert.message,
            parameter=alert.parameter or "",
            time=alert.updated_at,
        )

    def at_step(self, run: RunState) -> int:
        """The step every rank acts at: at once for a single rank; for several, the furthest
        rank's step plus ``lead_seconds`` of steps (at least one), so that all ranks have the
        message before they get there."""
        ranks = list(run.ranks.values())
        if len(ranks) <= 1 and all(s.hello.world_size == 1 for s in ranks):
            return 0
        furthest = max(s.last_step for s in ranks)
        times = [t for s in ranks if (t := _step_time(s.stats)) is not None]
        step_time = median(times) if times else 0.0
        lead = math.ceil(self.lead_seconds / step_time) if step_time > 0 else 1
        return furthest + max(lead, 1)

    def _forget_gone(self) -> None:
        """Identities of runs that left memory go too (bounded like the fleet)."""
        if len(self._peers) > 2 * sum(len(r.ranks) for r in self.fleet.runs.values()) + 64:
            runs = self.fleet.runs
            self._peers = {k: v for k, v in self._peers.items() if k[0] in runs}


def _step_time(stats: wire.Stats | None) -> float | None:
    value = None if stats is None else stats.metrics.get(m.STEP_TIME)
    return value if value is not None and math.isfinite(value) and value > 0 else None
