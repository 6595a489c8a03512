"""The training thread's phase, kept by the agent's hooks on the host clock.

The hooks (model forward pre/post, optimizer pre/post) call :meth:`PhaseClock.enter`: a clock
read and two attribute stores, no device sync. The sender thread reads :attr:`PhaseClock.state`
for heartbeats; the optimizer post-hook takes the step's time per phase with
:meth:`PhaseClock.end_step`. Users and integrations declare the phases hooks cannot see
(``eval``, ``checkpoint``) with :meth:`PhaseClock.declare`, which ``Monitor.phase`` wraps.
"""

from __future__ import annotations

import threading
from time import perf_counter
from types import TracebackType

from gradwatch import wire
from gradwatch.wire.metrics import STEP_PHASES

INIT, DATA, FORWARD, BACKWARD, OPTIMIZER = wire.PHASES
_BUCKET = {phase: i for i, phase in enumerate(STEP_PHASES)}


class PhaseClock:
    """Where the training thread is; written by that thread, read by the sender thread."""

    def __init__(self) -> None:
        now = perf_counter()
        self.state: tuple[str, bool, float] = (INIT, False, now)
        """``(phase, declared, since)``, replaced as one object so a reader never sees a mix."""
        self.auto = INIT
        """The automatic phase, resumed when the declared phases held over it end."""
        self.held: list[str] = []
        """Declared phases held by ``with`` blocks, innermost last."""
        self.seconds = [0.0] * len(STEP_PHASES)
        """Time of the current step per automatic phase (``STEP_PHASES`` order)."""
        self.step_end: float | None = None
        """When the latest optimizer step ended (None before the first)."""
        self.progress = now
        """When a step last completed (or the clock started): stalls are measured from it."""
        self.thread: int | None = threading.get_ident()
        """The training thread (the one that runs the hooks)."""

    def _switch(self, phase: str, declared: bool, now: float) -> None:
        current, was_declared, since = self.state
        if not was_declared:
            i = _BUCKET.get(current)
            if i is not None:
                self.seconds[i] += now - since
        self.state = (phase, declared, now)

    def enter(self, phase: str) -> None:
        """An automatic phase begins (hooks). It ends a declared phase, unless one is held:
        then it is part of that phase (the forwards of an evaluation) and changes nothing."""
        if not self.held:
            self.auto = phase
            self._switch(phase, False, perf_counter())

    def end_step(self) -> tuple[float | None, list[float]]:
        """The optimizer step ended: return the time since the previous one and the step's
        seconds per phase, and start the next step's ``data`` phase."""
        now = perf_counter()
        self.auto = DATA
        if not self.held:
            self._switch(DATA, False, now)
        seconds, self.seconds = self.seconds, [0.0] * len(STEP_PHASES)
        step_time = None if self.step_end is None else now - self.step_end
        self.step_end = self.progress = now
        return step_time, seconds

    def declare(self, name: str) -> DeclaredPhase:
        """Enter declared phase ``name`` now; see :class:`DeclaredPhase`."""
        if not isinstance(name, str) or not 0 < len(name) <= wire.MAX_PHASE_LEN:
            raise ValueError(f"phase: a name of 1 to {wire.MAX_PHASE_LEN} characters, got {name!r}")
        self._switch(name, True, perf_counter())
        return DeclaredPhase(self, name)


class DeclaredPhase:
    """A declared phase. Used as ``with monitor.phase("eval"):`` it holds until the block ends
    (forwards inside it do not end it), then the automatic phase resumes. Used without
    ``with`` it lasts until the next automatic phase change."""

    def __init__(self, clock: PhaseClock, name: str) -> None:
        self._clock = clock
        self.name = name

    def __enter__(self) -> DeclaredPhase:
        self._clock.held.append(self.name)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        clock = self._clock
        if self.name in clock.held:
            del clock.held[len(clock.held) - 1 - clock.held[::-1].index(self.name)]
        now = perf_counter()
        if clock.held:
            clock._switch(clock.held[-1], True, now)
        else:
            clock._switch(clock.auto, False, now)
