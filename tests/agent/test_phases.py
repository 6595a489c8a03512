"""Liveness: heartbeats from the sender thread say what a blocked training thread is doing and,
once it stalls, where; stats frames carry each step's phase durations.

The training loop runs in its own thread and blocks on a :class:`Gate` the test opens only
after it has seen the heartbeat it waits for: nothing here depends on timing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import gradwatch.agent as ga
from gradwatch import wire
from gradwatch.agent.phases import PhaseClock
from gradwatch.wire.metrics import STEP_PHASES, phase_seconds
from tests.helpers.frame_sink import FrameSink

FAST = {"heartbeat_seconds": 0.05, "stall_seconds": 0.2}


class Gate:
    """Blocks the training thread at one place, the ``at``-th time it passes there (once
    armed), until the test opens it."""

    def __init__(self) -> None:
        self.at: int | None = None
        self.passed = 0
        self.reached = threading.Event()
        self.opened = threading.Event()

    def block(self) -> None:
        self.passed += 1
        if self.passed == self.at:
            self.reached.set()
            assert self.opened.wait(60), "the test never opened the gate"


class _GateFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, gate: Gate) -> torch.Tensor:  # type: ignore[override]
        ctx.gate = gate
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        ctx.gate.block()  # stuck in backward
        return grad, None


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)
        self.forward_gate = Gate()
        self.backward_gate = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_gate.block()  # stuck in forward
        return _GateFn.apply(self.lin(x), self.backward_gate)  # type: ignore[no-any-return]


def stuck_in_data(gate: Gate) -> None:
    gate.block()


def stuck_in_eval(mon: ga.Monitor, gate: Gate) -> None:
    with mon.phase("eval"):
        gate.block()


def stuck_in_optimizer(gate: Gate) -> None:
    gate.block()


class Rig:
    """A model and a training thread (which attaches gradwatch itself, as a training loop
    does) that can be stopped in any phase."""

    def __init__(self, sink: FrameSink, steps: int = 4) -> None:
        torch.manual_seed(0)
        self.endpoint = sink.endpoint
        self.net = Net()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01)
        self.data_gate, self.eval_gate, self.opt_gate = Gate(), Gate(), Gate()
        self.steps = steps
        self.error: BaseException | None = None
        self.attached = threading.Event()
        self.thread = threading.Thread(target=self._train, name="training")

    def start(self) -> None:
        self.thread.start()
        assert self.attached.wait(60)

    def _opt_hook(self, *args: Any) -> None:
        stuck_in_optimizer(self.opt_gate)

    def _train(self) -> None:
        try:
            self.mon = ga.watch(self.net, self.opt, run="t", endpoint=self.endpoint, **FAST)
            self.opt.register_step_pre_hook(self._opt_hook)  # runs after gradwatch's pre-hook
            self.attached.set()
            for _ in range(self.steps):
                stuck_in_data(self.data_gate)
                loss = self.net(torch.randn(3, 4)).pow(2).mean()
                loss.backward()
                self.opt.step()
                self.mon.log(loss=loss)
                self.opt.zero_grad()
                stuck_in_eval(self.mon, self.eval_gate)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> None:
        for gate in (self.data_gate, self.eval_gate, self.opt_gate):
            gate.opened.set()
        for gate in (self.net.forward_gate, self.net.backward_gate):
            gate.opened.set()
        self.thread.join(60)
        if self.attached.is_set():
            self.mon.close()
            assert self.mon.errors == 0
        assert self.error is None


@pytest.fixture
def rig(sink: FrameSink) -> Iterator[Rig]:
    r = Rig(sink)
    try:
        yield r
    finally:
        r.finish()


def _stalled_beat(sink: FrameSink, phase: str) -> wire.Heartbeat:
    beat = sink.wait_for(
        lambda f: isinstance(f, wire.Heartbeat) and f.phase == phase and bool(f.stack)
    )
    assert isinstance(beat, wire.Heartbeat)
    return beat


@pytest.mark.parametrize(
    ("where", "at", "phase", "function"),
    [
        ("data", 1, "init", "stuck_in_data"),  # before the first forward
        ("data", 2, "data", "stuck_in_data"),  # after an optimizer step
        ("forward", 1, "forward", "Net.forward"),
        ("backward", 1, "backward", "_GateFn.backward"),
        ("optimizer", 1, "optimizer", "stuck_in_optimizer"),
        ("eval", 1, "eval", "stuck_in_eval"),
    ],
)
def test_phases_heartbeat_names_the_phase_and_function_of_a_blocked_training_thread(
    rig: Rig, sink: FrameSink, where: str, at: int, phase: str, function: str
) -> None:
    gate = {
        "data": rig.data_gate,
        "forward": rig.net.forward_gate,
        "backward": rig.net.backward_gate,
        "optimizer": rig.opt_gate,
        "eval": rig.eval_gate,
    }[where]
    gate.at = at
    rig.start()
    assert gate.reached.wait(60)
    beat = _stalled_beat(sink, phase)
    assert beat.declared == (phase == "eval")
    assert beat.phase_seconds > 0
    assert len(beat.stack) <= wire.MAX_STACK
    names = [entry.rsplit(" in ", 1)[1] for entry in beat.stack]
    assert function in names, beat.stack
    assert names.index(function) < names.index("Rig._train")  # innermost first
    gate.opened.set()
    rig.thread.join(60)
    # once the loop has finished its steps, the rank keeps beating: its last step, in data
    last = sink.wait_for(
        lambda f: isinstance(f, wire.Heartbeat) and f.step == rig.steps and f.phase == "data"
    )
    assert isinstance(last, wire.Heartbeat) and not last.declared and not last.stack


def test_phases_heartbeats_before_a_stall_carry_no_stack(rig: Rig, sink: FrameSink) -> None:
    rig.data_gate.at = 1
    rig.start()
    assert rig.data_gate.reached.wait(60)
    _stalled_beat(sink, "init")
    beats = [f for f in sink.of(wire.Heartbeat) if isinstance(f, wire.Heartbeat)]
    assert all(f.step == 0 and f.phase == "init" and not f.declared for f in beats)
    assert not beats[0].stack or beats[0].phase_seconds >= FAST["stall_seconds"]


def test_phases_stats_carry_each_steps_phase_durations(rig: Rig, sink: FrameSink) -> None:
    rig.data_gate.at = 2  # blocked after step 1, before the forward of step 2
    rig.start()
    beat = _stalled_beat(sink, "data")
    rig.data_gate.opened.set()
    rig.thread.join(60)
    rig.mon.close()
    sink.drain(until=wire.Bye)
    stats = {f.step: f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)}
    assert sorted(stats) == list(range(1, rig.steps + 1))
    for s in stats.values():
        assert {phase_seconds(p) for p in STEP_PHASES} <= set(s.metrics)
        assert all(s.metrics[phase_seconds(p)] >= 0 for p in STEP_PHASES)
    # The data phase of the blocked step lasted at least as long as the heartbeat saw it.
    assert stats[2].metrics[phase_seconds("data")] >= beat.phase_seconds > 0
    # The phases partition the step (one clock reading ends a phase and starts the next),
    # less the time in declared phases (the eval block after each step).
    for s in list(stats.values())[1:]:
        total = sum(s.metrics[phase_seconds(p)] for p in STEP_PHASES)
        assert total <= s.metrics[wire.metrics.STEP_TIME] * (1 + 1e-9)


def test_phases_durations_add_up_to_the_step_time_without_declared_phases(
    sink: FrameSink,
) -> None:
    m = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with ga.watch(m, opt, run="t", endpoint=sink.endpoint) as mon:
        sink.drain(until=wire.Hello)
        for _ in range(3):
            m(torch.randn(2, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
    assert mon.errors == 0
    sink.drain(until=wire.Bye)
    for s in [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)][1:]:
        total = sum(s.metrics[phase_seconds(p)] for p in STEP_PHASES)
        assert total == pytest.approx(s.metrics[wire.metrics.STEP_TIME], rel=1e-6)


def test_phases_declared_with_block_holds_over_forwards_and_restores_the_automatic_phase() -> None:
    clock = PhaseClock()
    clock.enter("forward")
    clock.end_step()
    with clock.declare("eval"):
        clock.enter("forward")  # the evaluation's own forwards
        clock.enter("backward")
        assert clock.state[:2] == ("eval", True)
        with clock.declare("checkpoint"):
            assert clock.state[:2] == ("checkpoint", True)
        assert clock.state[:2] == ("eval", True)
    assert clock.state[:2] == ("data", False)


def test_phases_declared_without_with_lasts_until_the_next_automatic_change() -> None:
    clock = PhaseClock()
    clock.declare("checkpoint")
    assert clock.state[:2] == ("checkpoint", True)
    clock.enter("forward")
    assert clock.state[:2] == ("forward", False)


@pytest.mark.parametrize("name", ["", "x" * (wire.MAX_PHASE_LEN + 1)])
def test_phases_declared_names_must_fit_the_wire(name: str) -> None:
    with pytest.raises(ValueError, match="phase"):
        PhaseClock().declare(name)


def test_phases_are_kept_around_a_compiled_model(sink: FrameSink) -> None:
    # torch.compile runs the hooks instead of tracing them: no warning (warnings are errors
    # here), and the forward is timed.
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with ga.watch(m, opt, run="t", endpoint=sink.endpoint) as mon:
        sink.drain(until=wire.Hello)
        compiled = torch.compile(m, backend="eager")
        for _ in range(3):
            compiled(torch.randn(2, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
    assert mon.errors == 0
    sink.drain(until=wire.Bye)
    stats = [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]
    assert all(s.metrics[phase_seconds("forward")] > 0 for s in stats)
