""":class:`NullMonitor`: what :func:`gradwatch.agent.watch` returns when gradwatch is disabled
(``GRADWATCH_DISABLED=1``): the :class:`Monitor` API, doing nothing."""

from __future__ import annotations

from gradwatch.agent.actions import Actions
from gradwatch.agent.config import AgentConfig
from gradwatch.agent.exits import ExitInfo
from gradwatch.agent.monitor import Monitor, Value
from gradwatch.agent.phases import PhaseClock
from gradwatch.agent.transport import Sender


class NullMonitor(Monitor):
    """A :class:`Monitor` that registers no hook, starts no thread and opens no socket.

    ``log``, ``log_step`` and ``close`` do nothing; ``phase`` checks its name like the real
    one (a typo fails the same way with gradwatch on or off) and declares it to a clock no one
    reads; ``step`` and ``dropped`` stay 0. So code written for the agent runs unchanged when
    it is switched off: no ``if monitor:`` in the training loop."""

    def __init__(self, config: AgentConfig) -> None:  # no super().__init__: nothing to attach
        self.config = config
        self.session = ""
        self.step = 0
        self.errors = 0
        self.closed = False
        self._clock = PhaseClock()
        self._actions = Actions()  # never receives: should_stop stays False, alerts() empty

    @property
    def dropped(self) -> int:
        return 0

    @property
    def sender(self) -> Sender:
        raise AttributeError("a disabled gradwatch monitor has no sender")

    def log(self, **values: Value) -> None:
        pass

    def log_step(self, **values: Value) -> None:
        pass

    def note_exit(self, info: ExitInfo, thread: int | None) -> None:
        pass

    def _close(self, reason: str | None, exc: BaseException | None) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"NullMonitor(run={self.config.run!r}, disabled)"
