"""GRADWATCH_DISABLED: watch() returns a monitor that does nothing, attaches nothing, starts no
thread and opens no socket, whatever the other settings say."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest
import torch

import gradwatch.agent as ga
from tests.helpers.frame_sink import FrameSink


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_null_disabled_watch_attaches_nothing_and_opens_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRADWATCH_DISABLED", "1")
    monkeypatch.setenv("GRADWATCH_EVERY", "not a number")  # ignored while disabled
    monkeypatch.delenv("GRADWATCH_RUN", raising=False)  # so is the missing run
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    threads, fds = set(threading.enumerate()), _open_fds()
    handlers = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    hooks = (sys.excepthook, threading.excepthook)

    with ga.watch(m, opt) as mon:
        assert isinstance(mon, ga.NullMonitor) and isinstance(mon, ga.Monitor)
        for _ in range(3):
            loss = m(torch.randn(3, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            mon.log(loss=loss, tokens=torch.tensor(12), samples=3)
            mon.log_step(val_loss=1.0)
            opt.zero_grad()
            with mon.phase("eval"):
                m(torch.randn(3, 4))
        mon.phase("checkpoint")
        assert (set(threading.enumerate()), _open_fds()) == (threads, fds)

    assert mon.closed and (mon.step, mon.dropped, mon.errors) == (0, 0, 0)
    assert mon.config.disabled and mon.config.run == "disabled"
    assert not (m._forward_pre_hooks or m._forward_hooks)
    assert not (opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks)
    assert all(p._post_accumulate_grad_hooks is None for p in m.parameters())
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    assert (sys.excepthook, threading.excepthook) == hooks
    with pytest.raises(AttributeError, match="disabled"):
        _ = mon.sender
    with pytest.raises(ValueError, match="phase"):
        mon.phase("")  # a typo fails the same way with gradwatch on or off
    mon.close("error")  # idempotent, any reason


def test_null_disabled_keeps_the_settings_that_resolve(
    sink: FrameSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADWATCH_DISABLED", "true")
    m = torch.nn.Linear(4, 2)
    mon = ga.watch(m, torch.optim.SGD(m.parameters(), lr=0.1), "r", sink.endpoint, every=4)
    assert isinstance(mon, ga.NullMonitor)
    assert (mon.config.run, mon.config.every, mon.config.disabled) == ("r", 4, True)
    cfg = ga.AgentConfig(run="c", endpoint=sink.endpoint)
    assert isinstance(ga.watch(m, torch.optim.SGD(m.parameters(), lr=0.1), config=cfg),
                      ga.NullMonitor)  # fmt: skip


def test_null_argument_wins_over_the_variable_and_a_bad_variable_is_an_error(
    sink: FrameSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    monkeypatch.setenv("GRADWATCH_DISABLED", "1")
    with ga.watch(m, opt, "r", sink.endpoint, disabled=False) as mon:
        assert type(mon) is ga.Monitor and opt._optimizer_step_post_hooks
    monkeypatch.setenv("GRADWATCH_DISABLED", "perhaps")
    with pytest.raises(ValueError, match="^GRADWATCH_DISABLED: expected true or false"):
        ga.watch(m, opt, "r", sink.endpoint)
    monkeypatch.delenv("GRADWATCH_DISABLED")
    assert isinstance(ga.watch(m, opt, "r", sink.endpoint, disabled=True), ga.NullMonitor)


def test_null_disabled_monitor_answers_the_alert_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The HF and Lightning callbacks read these every step, gradwatch on or off."""
    monkeypatch.setenv("GRADWATCH_DISABLED", "1")
    m = torch.nn.Linear(4, 2)
    with ga.watch(m, torch.optim.SGD(m.parameters(), lr=0.1), run="off") as mon:
        seen: list[object] = []
        callback = seen.append
        assert mon.on_alert(callback) is callback
        mon.checkpoint_done()
        assert (mon.should_stop, mon.should_checkpoint, mon.alerts(), seen) == (
            False,
            False,
            [],
            [],
        )
