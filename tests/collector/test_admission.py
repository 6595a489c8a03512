"""Sessions and limits: a live rank is never taken over, the collector never grows without
bound, and every refusal is counted and raises an alert."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from gradwatch.collector.alert import COLLECTOR_RANK, COLLECTOR_RUN
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import build_core
from gradwatch.collector.fleet import Refused
from gradwatch.collector.store import Store
from tests.helpers.fake_rank import NAMES, PARAMS, FakeRank, Harness


def _from(r: FakeRank, host: str, pid: int) -> FakeRank:
    """``r``'s run and rank, as another process would send it."""
    other = FakeRank(r.run, r.rank)
    real = other.hello

    def hello() -> object:
        return dataclasses.replace(real(), host=host, pid=pid)

    other.hello = hello  # type: ignore[assignment, method-assign]
    return other


def test_admission_duplicate_rank_is_refused_and_the_first_keeps_being_monitored() -> None:
    h = Harness()
    first = _from(FakeRank("shared"), "node-a", 100)
    second = _from(FakeRank("shared"), "node-b", 200)
    h.send(first.hello())
    h.send(first.stats(1))
    with pytest.raises(Refused) as refused:
        h.send(second.hello())
    assert refused.value.reason == "duplicate_rank"
    assert not h.offer(second.stats(1))  # the second's frames: refused, counted by the reason
    assert h.core.health.rejected["duplicate_rank"] == 1
    h.send(first.stats(60, loss=math.nan))  # the first is still judged
    assert [a.step for a in h.firing("non_finite")] == [60]
    h.tick()
    [dup] = h.firing("duplicate_rank")
    assert (dup.run, dup.rank, dup.severity) == ("shared", 0, "error")
    for words in ("node-a pid 100", "node-b pid 200", "refused"):
        assert words in dup.message
    state = h.fleet.rank("shared", 0)
    assert state is not None and state.hello.host == "node-a"


def test_admission_a_reconnect_of_the_same_session_is_not_a_duplicate() -> None:
    h = Harness()
    r = FakeRank("again")
    h.send(r.hello())
    h.send(r.stats(1))
    h.send(r.hello())  # the agent reconnected: same session
    h.send(r.stats(2))
    h.tick()
    assert h.firing() == [] and h.fleet.rank("again", 0).frames == 4  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["bye", "silent"])
def test_admission_a_new_session_takes_over_after_bye_or_silence(how: str) -> None:
    h = Harness()
    old, new = _from(FakeRank("relaunch"), "a", 1), _from(FakeRank("relaunch"), "b", 2)
    h.send(old.hello())
    h.send(old.stats(5))
    with pytest.raises(Refused):
        h.send(new.hello(), dt=1.0)
    if how == "bye":
        h.send(old.bye(6))
        gap = 1.0
    else:
        gap = 61.0  # past trainer_silent's floor: the old session went silent
    h.send(new.stats(1), dt=gap)  # the refused session's next frame takes over with its hello
    state = h.fleet.rank("relaunch", 0)
    assert state is not None and state.hello.host == "b" and state.last_step == 1
    h.send(new.stats(2, loss=math.nan))
    assert [a.step for a in h.firing("non_finite")] == [2]


def test_admission_max_runs_evicts_ended_runs_first_then_refuses_and_alerts() -> None:
    h = Harness(config=CollectorConfig(max_runs=2))
    a, b, c, d = (FakeRank(name) for name in "abcd")
    for r in (a, b):
        h.send(r.hello())
    h.send(a.bye(3))
    h.send(c.hello())  # a ended: it makes room
    assert sorted(h.fleet.runs) == ["b", "c"]
    assert not h.offer(d.hello())
    assert not h.offer(d.stats(1))  # the refused session's frames: the same reason
    assert h.core.health.rejected["max_runs"] == 2 and h.core.health.limit_hits["max_runs"] == 1
    h.tick()
    [alert] = h.firing("collector_limit")
    assert (alert.run, alert.rank, alert.parameter) == (COLLECTOR_RUN, COLLECTOR_RANK, "max_runs")
    assert "max_runs (2)" in alert.message and "d/0" in alert.message
    h.tick(400)  # nothing refused for recent_seconds: it resolves
    h.tick(1)
    h.tick(1)
    assert h.firing("collector_limit") == []


def test_admission_max_ranks_and_max_params_refuse_hellos() -> None:
    h = Harness(config=CollectorConfig(max_ranks=3, max_params=len(PARAMS)))
    for rank in range(3):
        h.send(FakeRank("wide", rank).hello())
    assert not h.offer(FakeRank("wide", 3).hello())
    big = FakeRank("big", params=[*PARAMS, ("extra.weight", (4,), "float32")])
    assert not h.offer(big.hello())
    health = h.core.health
    assert (health.rejected["max_ranks"], health.rejected["max_params"]) == (1, 1)
    assert h.fleet.ranks_held == 3 and "big" not in h.fleet.runs
    h.tick()
    assert {a.parameter for a in h.firing("collector_limit")} == {"max_ranks", "max_params"}


def test_admission_max_open_alerts_caps_one_run_and_alerts() -> None:
    h = Harness(config=CollectorConfig(max_open_alerts=2))
    ranks = [FakeRank("noisy", rank) for rank in range(4)]
    for r in ranks:  # a NaN in a different parameter on each rank: four causes, four alerts
        h.send(r.hello())
        h.send(r.stats(1, grad={NAMES[r.rank]: math.nan}))
    assert len(h.firing("non_finite")) == 2
    assert h.core.health.limit_hits["max_open_alerts"] == 2
    h.tick()
    [alert] = h.firing("collector_limit")
    assert alert.parameter == "max_open_alerts" and "noisy" in alert.message


def test_admission_ended_runs_leave_memory_after_grace_and_silent_ones_when_stale() -> None:
    h = Harness(config=CollectorConfig(grace_seconds=10, stale_seconds=1000))
    done, crashed = FakeRank("done"), FakeRank("crashed")
    for r in (done, crashed):
        h.send(r.hello())
        h.send(r.stats(1))
    h.send(done.bye(2))
    h.tick(5)
    assert sorted(h.fleet.runs) == ["crashed", "done"]
    h.tick(10)
    assert sorted(h.fleet.runs) == ["crashed"]
    h.tick(100)
    assert h.firing("trainer_silent")  # the crashed one is silent...
    h.tick(1000)
    assert h.fleet.runs == {} and h.fleet.ranks_held == 0  # ...until it is stale
    assert h.firing() == []


def test_admission_resolved_alerts_in_memory_are_bounded_and_stay_in_the_database(
    tmp_path: Path,
) -> None:
    config = CollectorConfig(db_path=str(tmp_path / "a.db"), max_resolved_alerts=3)
    core = build_core(config)
    now = 1000.0
    for i in range(6):
        r = FakeRank(f"flap{i}")
        for frame in (r.hello(), r.stats(1, loss=math.nan), r.bye(2)):
            state = core.fleet.apply(frame, now)
            core.engine.on_frame(state, frame, now)
    core.engine.tick(now + config.grace_seconds + 1)
    resolved = core.book.alerts("resolved")
    assert len(resolved) == 3
    assert len(Store(config.db_path).load_alerts()) == 6
    core.close()


def test_admission_a_restart_keeps_first_seen_and_counts(tmp_path: Path) -> None:
    config = CollectorConfig(db_path=str(tmp_path / "r.db"))
    r = FakeRank("long")
    core = build_core(config)
    for i, frame in enumerate([r.hello(), r.stats(1), r.stats(2), r.stats(3)]):
        core.engine.on_frame(core.fleet.apply(frame, 100.0 + i), frame, 100.0 + i)
    core.close()

    again = build_core(config)  # the agent reconnects: the same session says hello again
    for i, frame in enumerate([r.hello(), r.stats(4)]):
        again.engine.on_frame(again.fleet.apply(frame, 500.0 + i), frame, 500.0 + i)
    again.close()
    [record] = Store(config.db_path).load_runs()
    assert (record.first_seen, record.frames, record.last_step) == (100.0, 6, 4)


def test_admission_open_alerts_of_ranks_that_never_come_back_resolve(tmp_path: Path) -> None:
    """Alerts reloaded after a restart for a rank that never reconnects do not stay open."""
    config = CollectorConfig(db_path=str(tmp_path / "o.db"), grace_seconds=100)
    core = build_core(config)
    r = FakeRank("gone")
    for frame in (r.hello(), r.stats(1, loss=math.nan)):
        core.engine.on_frame(core.fleet.apply(frame, 1000.0), frame, 1000.0)
    core.close()
    again = build_core(config)
    assert [a.state for a in again.book.alerts()] == ["firing"]
    again.engine.tick(1050.0)  # within the grace period: kept
    assert [a.state for a in again.book.alerts()] == ["firing"]
    again.engine.tick(1200.0)
    assert [a.state for a in again.book.alerts()] == ["resolved"]
    again.close()
