"""Malformed frames over a real ZeroMQ socket to a real ingest thread: counted, never fatal."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from gradwatch import wire
from gradwatch.collector.book import AlertBook
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import build_core
from gradwatch.collector.engine import Engine
from gradwatch.collector.fleet import Fleet
from gradwatch.collector.health import IngestHealth
from gradwatch.collector.ingest import Ingest, bind_endpoint, connectable
from gradwatch.collector.rules import build_rules
from tests.helpers.fake_rank import FakeRank
from tests.helpers.waiting import wait_until


@pytest.fixture
def ingest() -> Iterator[tuple[Ingest, zmq.Socket[bytes]]]:
    fleet, book = Fleet(), AlertBook()
    engine = Engine(fleet, book, build_rules())
    ing = Ingest("tcp://127.0.0.1:0", fleet, engine, IngestHealth(), tick_seconds=0.2)
    ing.start()
    ctx = zmq.Context()
    push = ctx.socket(zmq.DEALER)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(ing.endpoint)
    try:
        yield ing, push
    finally:
        push.close()
        ctx.term()
        ing.stop()


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def test_ingest_counts_each_kind_of_bad_frame_and_keeps_serving(
    ingest: tuple[Ingest, zmq.Socket[bytes]],
) -> None:
    ing, push = ingest
    r = FakeRank()
    good = wire.encode(r.stats(1))
    hello = msgpack.unpackb(wire.encode(r.hello()))
    bad = {
        "malformed": [
            os.urandom(64),
            good[: len(good) // 2],
            b"\xc6\xff\xff\xff\xf0abc",
            _pack([1, 2]),
        ],
        "version": [_pack({**hello, "v": 2})],
        "unknown_kind": [_pack({**hello, "kind": "gossip"})],
        "schema": [_pack({**hello, "rank": "zero"}), _pack({**hello, "params": "lots"})],
        "no_hello": [good],
    }
    for frames in bad.values():
        for frame in frames:
            push.send(frame)
    wait_until(lambda: sum(ing.health.rejected.values()) >= sum(map(len, bad.values())))
    for reason, frames in bad.items():
        assert reason in wire.REJECT_REASONS
        assert ing.health.rejected[reason] == len(frames), reason
    push.send(wire.encode(r.hello()))
    push.send(wire.encode(r.stats(1)))
    push.send(wire.encode(r.stats(2, loss=math.nan)))
    wait_until(lambda: ing.health.received["stats"] == 2)
    assert ing.health.received["hello"] == 1 and ing.alive()
    assert [a.rule for a in ing.engine.book.alerts("firing")] == ["non_finite"]
    assert ing.health.latency.n >= 10


def test_ingest_rejects_oversized_and_counts_internal_errors_once() -> None:
    """Each message is counted once: accepted or rejected. A failure to place a frame is
    ``internal`` (not also received); a rule that raises is a rule error, the frame is
    accepted and the other rules still judge it."""
    fleet = Fleet()
    engine = Engine(fleet, AlertBook(), build_rules())
    ing = Ingest("tcp://127.0.0.1:0", fleet, engine, engine.health)
    try:
        ing.handle(b"\x00" * (wire.MAX_FRAME_BYTES + 1))
        assert ing.health.rejected["oversized"] == 1

        def broken(*args: object) -> None:
            raise RuntimeError("fleet bug")

        r = FakeRank()
        fleet.apply, real = broken, fleet.apply  # type: ignore[method-assign]
        ing.handle(wire.encode(r.hello()))
        fleet.apply = real  # type: ignore[method-assign]
        assert ing.health.rejected["internal"] == 1 and ing.health.received["hello"] == 0

        spike = next(rule for rule in engine.rules if rule.name == "loss_spike")
        spike.check = broken  # type: ignore[method-assign]
        ing.handle(wire.encode(r.hello()))
        ing.handle(wire.encode(r.stats(1, loss=math.nan)))
        assert ing.health.rule_errors["loss_spike"] == 1
        assert [a.rule for a in engine.book.alerts("firing")] == ["non_finite"]
        assert ing.health.rejected["internal"] == 1 and ing.health.received["stats"] == 1
        h = ing.health
        assert h.messages == 4 == sum(h.received.values()) + sum(h.rejected.values())
    finally:
        ing.stop()


def test_endpoint_helpers() -> None:
    assert bind_endpoint("tcp://127.0.0.1:0") == "tcp://127.0.0.1:*"
    assert bind_endpoint("tcp://0.0.0.0:5555") == "tcp://0.0.0.0:5555"
    assert connectable("tcp://0.0.0.0:5555") == "tcp://127.0.0.1:5555"


def test_ingest_behind_sheds_sheddable_rules_on_all_but_the_newest_frame() -> None:
    core = build_core(CollectorConfig(), persist=False)
    ing = Ingest("tcp://127.0.0.1:0", core.fleet, core.engine, core.health)
    try:
        a, b = FakeRank("shed", 0), FakeRank("shed", 1)
        for frame in (a.hello(), b.hello()):
            ing.handle(wire.encode(frame))
        zero = {"blocks.0.ln1.weight": 0.0}
        batch = []
        for step in range(1, 6):
            loss = math.nan if step == 2 else 2.0  # a shed frame still gets the scalar rules
            batch.append((wire.encode(a.stats(step, grad=zero, full=step == 3, loss=loss)), None))
            batch.append((wire.encode(b.stats(step, grad=zero)), None))
        ing.handle_batch(batch)
        assert core.health.shed == 3 + 4  # a: 1, 2, 4 (3 is a full step, 5 the newest); b: 1-4
        assert core.health.received["stats"] == 10 and core.health.queued == 0
        assert [x.rule for x in core.book.alerts("firing")] == ["non_finite"]
        dead = core.fleet.rank("shed", 0).memory["dead_parameters"]  # type: ignore[union-attr]
        assert dead.streak[a.names.index("blocks.0.ln1.weight")] == 2  # steps 3 and 5 only
        assert "ingest is behind" in core.health.lagging()
        assert any("ingest is behind" in p for p in core.problems())
        assert "gradwatch_frames_shed_total 7.0" in core.registry.text().decode()
    finally:
        ing.stop()


def test_ingest_behind_judges_each_rank_with_sheddable_rules_once_a_second() -> None:
    """A fleet's batch holds one frame per rank: behind, the sheddable rules judge a rank at
    most once per second of its frames' time, the other rules every frame."""
    core = build_core(CollectorConfig(), persist=False)
    ing = Ingest("tcp://127.0.0.1:0", core.fleet, core.engine, core.health)
    try:
        ranks = [FakeRank("fleet", r) for r in range(4)]
        for r in ranks:
            ing.handle(wire.encode(r.hello()))
        for step in range(1, 21):  # 10 frames a second, one batch per step
            frames = [r.stats(step, time=1000 + step / 10) for r in ranks]
            ing.handle_batch([(wire.encode(f), None) for f in frames])
        assert core.health.received["stats"] == 80
        assert core.health.shed == 4 * (20 - 2)  # judged at 1000.1 and 1001.1 only
        assert core.fleet.rank("fleet", 0).judged_at == 1001.1  # type: ignore[union-attr]
    finally:
        ing.stop()
