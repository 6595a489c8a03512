"""Transport behaviour: absent, late and slow collectors never block or break training."""

from __future__ import annotations

import logging
import threading

import pytest
import torch
import zmq

import gradwatch.agent as ga
from gradwatch import wire
from tests.helpers.frame_sink import FrameSink, free_endpoint
from tests.helpers.waiting import wait_until


def _setup(
    endpoint: str, **kw: object
) -> tuple[torch.nn.Module, torch.optim.Optimizer, ga.Monitor]:
    m = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    cfg = ga.AgentConfig(run="t", endpoint=endpoint, **kw)  # type: ignore[arg-type]
    return m, opt, ga.Monitor(m, opt, cfg)


def _steps(m: torch.nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
    for _ in range(n):
        m(torch.randn(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()


def test_transport_no_collector_drops_and_counts_without_error() -> None:
    m, opt, mon = _setup(free_endpoint())
    _steps(m, opt, 50)
    assert mon.step == 50
    # every sealed frame (all but the still-open last one) is dropped and counted
    wait_until(lambda: mon.dropped >= 49)
    mon.close()
    assert mon.errors == 0


def test_transport_late_collector_gets_hello_again_and_dropped_count() -> None:
    endpoint = free_endpoint()
    m, opt, mon = _setup(endpoint)
    _steps(m, opt, 10)
    wait_until(lambda: mon.dropped >= 9)
    port = int(endpoint.rsplit(":", 1)[1])
    late = FrameSink(port)
    try:
        late.drain(until=wire.Hello)
        _steps(m, opt, 2)
        mon.close()
        late.drain(until=wire.Bye)
        assert late.of(wire.Hello)
        stats = [f for f in late.of(wire.Stats) if isinstance(f, wire.Stats)]
        assert stats and all(s.dropped >= 9 for s in stats)
        assert stats[-1].step == 12
    finally:
        late.close()


def test_transport_restarted_collector_relearns_parameter_table() -> None:
    first = FrameSink()
    m, opt, mon = _setup(first.endpoint)
    first.drain(until=wire.Hello)
    port = first.port
    first.close()
    second = FrameSink(port)
    try:
        second.drain(until=wire.Hello)
        assert second.of(wire.Hello)
    finally:
        mon.close()
        second.close()


def test_transport_slow_collector_never_blocks_training() -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.RCVHWM, 1)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        m = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(8)])
        opt = torch.optim.SGD(m.parameters(), lr=1e-4)
        cfg = ga.AgentConfig(run="t", endpoint=f"tcp://127.0.0.1:{port}", send_hwm=2)
        mon = ga.Monitor(m, opt, cfg)
        for _ in range(300):
            m(torch.randn(2, 64)).sum().backward()
            opt.step()
            opt.zero_grad()
        assert mon.step == 300
        wait_until(lambda: mon.dropped > 0)
        mon.close()
        assert mon.errors == 0
    finally:
        sock.close(linger=0)
        ctx.term()


def test_transport_retries_a_hello_the_socket_refused_after_a_handshake(
    sink: FrameSink, monkeypatch: object
) -> None:
    # ZeroMQ may report a handshake before the new pipe takes messages: the hello sent then
    # fails. Refuse the first two hellos (start-up and post-handshake); one must still arrive.
    from gradwatch.agent.transport import Sender

    real_send = Sender._send
    refused: list[int] = []

    def flaky_send(self: Sender, sock: zmq.Socket[bytes], frame: wire.Frame, count: bool = True):
        if isinstance(frame, wire.Hello) and len(refused) < 2:
            refused.append(frame.seq)
            return False
        return real_send(self, sock, frame, count)

    monkeypatch.setattr(Sender, "_send", flaky_send)  # type: ignore[attr-defined]
    m, opt, mon = _setup(sink.endpoint)
    try:
        sink.drain(until=wire.Hello)
        _steps(m, opt, 3)
    finally:
        mon.close()
    sink.drain(until=wire.Bye)
    assert len(refused) == 2
    assert sink.of(wire.Hello), "no hello reached the collector after refused sends"
    assert [f.step for f in sink.of(wire.Stats)] == [1, 2, 3]


def test_transport_unreachable_collector_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = free_endpoint()
    caplog.set_level(logging.WARNING, logger="gradwatch.agent.transport")
    m, opt, mon = _setup(endpoint, connect_warn_seconds=0.05, heartbeat_seconds=0.05)
    try:
        _steps(m, opt, 3)

        def warnings() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "gradwatch.agent.transport"]

        wait_until(warnings)
        seen = mon.sender.heartbeats
        wait_until(lambda: mon.sender.heartbeats >= seen + 5)  # the sender thread went on
        assert len(warnings()) == 1
        text = warnings()[0].getMessage()
        assert endpoint in text and "GRADWATCH_ENDPOINT" in text and "dropped" in text
        assert "rank 0" in text
        # Heartbeats that found no collector carry no data: they are not counted as dropped.
        assert mon.dropped == 2  # the two sealed stats frames
    finally:
        mon.close()


def test_transport_heartbeats_arrive_while_the_training_thread_is_idle(
    sink: FrameSink,
) -> None:
    m, opt, mon = _setup(sink.endpoint, heartbeat_seconds=0.05)
    try:
        _steps(m, opt, 2)
        beats = [
            sink.wait_for(lambda f: isinstance(f, wire.Heartbeat) and f.step == 2) for _ in range(3)
        ]
        assert all(isinstance(b, wire.Heartbeat) and b.phase == "data" for b in beats)
        assert [b.seq for b in beats] == sorted({b.seq for b in beats})
    finally:
        mon.close()


def test_transport_a_frame_the_device_has_not_finished_waits_without_stopping_heartbeats(
    sink: FrameSink,
) -> None:
    # A CUDA frame is ready once its copy's event has completed; the sender polls it, so a
    # hung device holds that frame (and those after it) back but never the heartbeats.
    from gradwatch.agent.transport import Outgoing

    m, opt, mon = _setup(sink.endpoint, heartbeat_seconds=0.05)
    try:
        sink.drain(until=wire.Hello)
        device_done = threading.Event()

        def build(seq: int, dropped: int) -> wire.Frame:
            return wire.Heartbeat("t", 0, mon.session, seq, 42, 1.0, dropped, "data", 0.0)

        mon.sender.submit(Outgoing(build, [device_done.is_set]))
        seen = mon.sender.heartbeats
        # Three heartbeats sent after the held frame was queued (beats already on their way
        # when it was queued do not count: the sender's own counter says).
        wait_until(lambda: mon.sender.heartbeats >= seen + 3)
        sink.wait_for(lambda f: isinstance(f, wire.Heartbeat) and f.step == 0)
        assert not any(isinstance(f, wire.Heartbeat) and f.step == 42 for f in sink.frames)
        device_done.set()
        sink.wait_for(lambda f: isinstance(f, wire.Heartbeat) and f.step == 42)
    finally:
        mon.close()
