"""Alerts the collector sends back, and what the rank does about them.

The sender thread reads action messages off its socket and hands them to
:meth:`Actions.receive` (decode, keep, no callback there); the training thread reads the flags
(:attr:`AlertActions.should_stop`, :attr:`AlertActions.should_checkpoint`) and runs the
callbacks at the next step boundary (:meth:`Actions.deliver`, from the optimizer post-hook).
Nothing here blocks or raises into training: a bad message is counted and logged once.

What to do about an alert is the collector's policy for its rule (``action`` in the rule's
settings, ``notify`` by default) unless the agent overrides it (``watch(on_alert=...)``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping

from gradwatch import wire

log = logging.getLogger(__name__)

Callback = Callable[[wire.Action], None]
KEPT = 1024
"""Most alerts kept for :meth:`AlertActions.alerts` (oldest dropped first)."""
ANY_RULE = "*"
"""``on_alert`` key that applies to every rule not named on its own."""


def parse_policies(text: str | None) -> dict[str, str]:
    """``"non_finite=stop,loss_spike=checkpoint"`` → ``{"non_finite": "stop", ...}``; raise
    ValueError naming the bad pair."""
    out: dict[str, str] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        rule, sep, action = (s.strip() for s in pair.partition("="))
        if not sep or not rule or action not in wire.ACTIONS:
            raise ValueError(f"{pair.strip()!r} is not RULE=ACTION with ACTION in {wire.ACTIONS}")
        out[rule] = action
    return out


def format_policies(policies: Mapping[str, str] | str | None) -> str | None:
    """``watch(on_alert=...)`` as AgentConfig holds it: a mapping becomes ``rule=action,...``."""
    if policies is None or isinstance(policies, str):
        return policies
    return ",".join(f"{rule}={action}" for rule, action in policies.items())


class Actions:
    """The alerts received, the flags they set, the callbacks still to run."""

    def __init__(self, policies: Mapping[str, str] | None = None) -> None:
        self.policies = dict(policies or {})
        self.rejected = 0
        """Messages from the collector that could not be decoded (dropped)."""
        self._lock = threading.Lock()
        self._kept: deque[wire.Action] = deque(maxlen=KEPT)
        self._due: deque[wire.Action] = deque()
        """Received, callbacks not run yet (the training thread runs them)."""
        self._callbacks: list[Callback] = []
        self._stop_at: int | None = None
        self._checkpoint_at: int | None = None
        self._logged = False

    def policy(self, action: wire.Action) -> str:
        """What this rank does: the agent's own policy for the rule, else the collector's."""
        return self.policies.get(action.rule) or self.policies.get(ANY_RULE) or action.action

    # ---------------------------------------------------------------- sender thread

    def receive(self, data: bytes) -> None:
        """One message off the socket: keep it, and arm the flag its policy asks for."""
        try:
            action = wire.decode_action(data)
        except wire.WireError as exc:
            self.rejected += 1
            if not self._logged:
                self._logged = True
                log.warning("gradwatch: dropped a bad message from the collector: %s", exc)
            return
        what = self.policy(action)
        with self._lock:
            self._kept.append(action)
            self._due.append(action)
            if what == "stop":
                self._stop_at = _earliest(self._stop_at, action.at_step)
            elif what == "checkpoint":
                self._checkpoint_at = _earliest(self._checkpoint_at, action.at_step)

    # ---------------------------------------------------------------- training thread

    def subscribe(self, callback: Callback) -> None:
        self._callbacks.append(callback)

    def stop_due(self, step: int) -> bool:
        at = self._stop_at
        return at is not None and step >= at

    def checkpoint_due(self, step: int) -> bool:
        at = self._checkpoint_at
        return at is not None and step >= at

    def checkpoint_done(self) -> None:
        with self._lock:
            self._checkpoint_at = None

    def alerts(self) -> list[wire.Action]:
        with self._lock:
            return list(self._kept)

    def deliver(self, step: int) -> None:
        """Run the callbacks for every action due at ``step`` (each callback's error is
        logged and the others still run)."""
        if not self._due:
            return
        with self._lock:
            ready = [a for a in self._due if step >= a.at_step]
            for action in ready:
                self._due.remove(action)
        for action in ready:
            for callback in self._callbacks:
                try:
                    callback(action)
                except Exception:
                    log.exception("gradwatch on_alert callback %r failed", callback)


def _earliest(current: int | None, step: int) -> int:
    return step if current is None else min(current, step)


class AlertActions:
    """The public side of :class:`Actions` on a monitor (mixed into ``Monitor``)."""

    _actions: Actions
    step: int

    @property
    def should_stop(self) -> bool:
        """An alert whose policy is ``stop`` arrived and its step has come: end training."""
        return self._actions.stop_due(self.step)

    @property
    def should_checkpoint(self) -> bool:
        """An alert whose policy is ``checkpoint`` arrived: save one, then call
        :meth:`checkpoint_done` (until then this stays true)."""
        return self._actions.checkpoint_due(self.step)

    def checkpoint_done(self) -> None:
        """The checkpoint asked for was saved: ``should_checkpoint`` is false until the next."""
        self._actions.checkpoint_done()

    def alerts(self) -> list[wire.Action]:
        """Every alert the collector sent this rank so far (the latest 1024), oldest first;
        never blocks."""
        return self._actions.alerts()

    def on_alert(self, callback: Callback) -> Callback:
        """Call ``callback(action)`` on the training thread at the step boundary after each
        alert arrives (usable as a decorator)."""
        self._actions.subscribe(callback)
        return callback
