"""The agent's side of the back channel: alerts sent back, the flags, callbacks, overrides."""

from __future__ import annotations

import threading

import pytest
import torch

import gradwatch.agent as ga
from gradwatch import wire
from gradwatch.agent.actions import parse_policies
from tests.helpers.frame_sink import FrameSink
from tests.helpers.waiting import wait_until


def _model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    opt.zero_grad()


def _action(rule: str = "non_finite", action: str = "notify", at_step: int = 0) -> wire.Action:
    return wire.Action(
        run="r", rank=0, alert=7, rule=rule, severity="critical", action=action, step=3,
        at_step=at_step, message="NaN in w", parameter="0.weight", time=1.0,
    )  # fmt: skip


def _connected(
    sink: FrameSink, **settings: object
) -> tuple[ga.Monitor, torch.nn.Module, torch.optim.Optimizer]:
    model, opt = _model()
    mon = ga.watch(model, opt, run="r", endpoint=sink.endpoint, rank=0, world_size=1, **settings)
    sink.drain(until=wire.Hello)
    return mon, model, opt


def test_actions_wire_round_trip_and_rejections() -> None:
    action = _action(action="stop", at_step=12)
    assert wire.decode_action(wire.encode_action(action)) == action
    for bad, reason in (
        (b"\xc1", "malformed"),
        (wire.encode_action(action).replace(b"stop", b"halt"), "schema"),
        (wire.encode(FakeFrames.hello()), "unknown_kind"),
    ):
        with pytest.raises(wire.WireError) as err:
            wire.decode_action(bad)
        assert err.value.reason == reason


class FakeFrames:
    @staticmethod
    def hello() -> wire.Hello:
        return wire.Hello(
            run="r", rank=0, session="s", seq=0, time=1.0, world_size=1, host="h", pid=1,
            torch="2", device="cpu", optimizer="SGD", params=(),
        )  # fmt: skip


def test_actions_stop_from_the_collector_sets_should_stop(sink: FrameSink) -> None:
    mon, model, opt = _connected(sink)
    try:
        _step(model, opt)
        assert not mon.should_stop and mon.alerts() == []
        sink.send_back("r", 0, wire.encode_action(_action(action="stop")))
        wait_until(lambda: mon.should_stop)
        assert [a.alert for a in mon.alerts()] == [7]
        assert not mon.should_checkpoint
    finally:
        mon.close()


def test_actions_notify_sets_no_flag_but_the_agent_policy_overrides_it(sink: FrameSink) -> None:
    mon, model, opt = _connected(sink, on_alert={"non_finite": "checkpoint"})
    try:
        sink.send_back("r", 0, wire.encode_action(_action("loss_spike")))
        sink.send_back("r", 0, wire.encode_action(_action("non_finite")))
        wait_until(lambda: len(mon.alerts()) == 2)
        assert not mon.should_stop
        assert mon.should_checkpoint
        mon.checkpoint_done()
        assert not mon.should_checkpoint
    finally:
        mon.close()


def test_actions_wait_for_their_step_in_a_multi_rank_run(sink: FrameSink) -> None:
    mon, model, opt = _connected(sink)
    try:
        sink.send_back("r", 0, wire.encode_action(_action(action="stop", at_step=3)))
        wait_until(lambda: mon.alerts())
        seen = []
        for _ in range(4):
            seen.append(mon.should_stop)
            _step(model, opt)
        assert seen == [False, False, False, True]  # steps 0, 1, 2 before; step 3 stops
    finally:
        mon.close()


def test_actions_callbacks_run_on_the_training_thread_at_the_step_boundary(
    sink: FrameSink,
) -> None:
    mon, model, opt = _connected(sink)
    calls: list[tuple[int, int, int]] = []
    try:

        @mon.on_alert
        def note(action: wire.Action) -> None:
            calls.append((action.alert, threading.get_ident(), mon.step))

        mon.on_alert(lambda action: 1 / 0)  # a broken callback: logged, the others still run
        sink.send_back("r", 0, wire.encode_action(_action()))
        wait_until(lambda: mon.alerts())
        assert calls == []  # nothing runs on the sender thread
        _step(model, opt)
        assert calls == [(7, threading.get_ident(), 1)]
        _step(model, opt)
        assert len(calls) == 1  # once
    finally:
        mon.close()


def test_actions_garbage_from_the_collector_is_counted_and_training_goes_on(
    sink: FrameSink,
) -> None:
    mon, model, opt = _connected(sink)
    try:
        sink.send_back("r", 0, b"\x93\x01\x02")
        sink.send_back("r", 0, wire.encode_action(_action()))
        wait_until(lambda: mon.alerts())
        assert mon._actions.rejected == 1
        _step(model, opt)
        assert mon.errors == 0 and not mon.should_stop
    finally:
        mon.close()


def test_actions_a_collector_that_never_answers_leaves_training_unaffected(
    sink: FrameSink,
) -> None:
    mon, model, opt = _connected(sink, on_alert="*=stop")
    try:
        for _ in range(50):
            _step(model, opt)
        sink.wait_for(lambda f: isinstance(f, wire.Stats) and f.step == 49)  # 50 is still open
        assert mon.step == 50 and not mon.should_stop and mon.alerts() == []
        assert mon.errors == 0 and mon.dropped == 0
    finally:
        mon.close()


def test_actions_on_alert_setting_is_checked_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_policies("non_finite=stop, *=checkpoint") == {
        "non_finite": "stop",
        "*": "checkpoint",
    }
    with pytest.raises(ValueError, match="on_alert"):
        ga.AgentConfig(run="r", on_alert="non_finite=halt")
    monkeypatch.setenv("GRADWATCH_ON_ALERT", "loss_spike=stop")
    model, opt = _model()
    mon = ga.watch(model, opt, run="r", endpoint="tcp://127.0.0.1:1", connect_warn_seconds=60)
    try:
        assert mon.config.on_alert == "loss_spike=stop"
    finally:
        mon.close()
