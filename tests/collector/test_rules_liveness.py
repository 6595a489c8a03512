"""rank_stalled, trainer_silent, rank_crashed and rank_missing on multi-rank jobs of fake ranks:
positive and negative cases, the culprit and the origin."""

from __future__ import annotations

from collections.abc import Sequence

from tests.helpers.fake_rank import FakeRank, Harness, job

TORCH = "/venv/site-packages/torch"
WAIT = (
    f"{TORCH}/autograd/graph.py:979 in _engine_run_backward",
    f"{TORCH}/autograd/__init__.py:395 in backward",
    "/src/train.py:237 in train",
)
SLEEP = ("/src/injector.py:221 in FaultInjector.before_backward", "/src/train.py:236 in train")
DATA = ("/src/dataset.py:88 in Dataset.__getitem__", "/src/train.py:201 in train")
COLLECTIVE = (f"{TORCH}/distributed/distributed_c10d.py:2501 in all_reduce", "/src/t.py:9 in f")


def start(h: Harness, ranks: Sequence[FakeRank], steps: int = 5) -> None:
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    for step in range(1, steps + 1):
        h.step(ranks, step, dt=0.1)


def beat(
    h: Harness,
    where: dict[int, tuple[str, Sequence[str]]],
    ranks: Sequence[FakeRank],
    seconds: int,
    step: int = 5,
    declared: bool = False,
) -> None:
    """Heartbeats every second for ``seconds``: rank -> (phase, stack); the collector ticks."""
    for t in range(1, seconds + 1):
        h.now += 1.0
        for r in ranks:
            phase, stack = where[r.rank]
            h.send(r.heartbeat(step, phase, float(t), declared, stack), dt=0.0)
        h.tick()


def test_rank_stalled_names_the_rank_that_holds_up_a_ddp_job_with_its_frame() -> None:
    h, ranks = Harness("rank_stalled", seconds=3.0), job(2)
    start(h, ranks)
    beat(h, {0: ("backward", ()), 1: ("backward", ())}, ranks, 2)
    assert h.open() == []  # 2 s without a step: within the limit
    beat(h, {0: ("backward", WAIT), 1: ("backward", SLEEP)}, ranks, 3)
    [alert] = h.firing("rank_stalled")
    assert (alert.rank, alert.ranks, alert.step, alert.first_step) == (1, [0, 1], 5, 5)
    assert alert.message.startswith("rank 1 stuck in backward for ")
    assert "at step 6 (last completed 5), host testhost pid 101" in alert.message
    assert "injector.py:221 in FaultInjector.before_backward < train.py:236 in train" in (
        alert.message
    )
    assert "; rank 0 waits in backward (graph.py:979 in _engine_run_backward)" in alert.message
    h.step(ranks, 6, dt=0.1)  # the job moves again
    h.tick()
    assert h.firing() == []


def test_rank_stalled_culprit_among_eight_is_the_one_elsewhere_or_behind() -> None:
    h, ranks = Harness("rank_stalled", seconds=3.0), job(8)
    start(h, ranks)
    where = {r: ("backward", COLLECTIVE) for r in range(8)}
    where[3] = ("data", DATA)
    beat(h, where, ranks, 5)
    [alert] = h.firing()
    assert alert.rank == 3 and alert.ranks == list(range(8))
    assert "rank 3 stuck in data" in alert.message and "dataset.py:88 in Dataset.__getitem__" in (
        alert.message
    )
    assert "ranks 0-2,4-7 wait in backward (distributed_c10d.py:2501 in all_reduce)" in (
        alert.message
    )


def test_rank_stalled_without_a_culprit_says_no_rank_stands_out() -> None:
    h, ranks = Harness("rank_stalled", seconds=3.0), job(4)
    start(h, ranks)
    beat(h, {r: ("backward", COLLECTIVE) for r in range(4)}, ranks, 5)
    [alert] = h.firing()
    assert alert.rank == 0 and alert.ranks == [0, 1, 2, 3]
    assert alert.message.startswith("ranks 0-3 stuck in backward") and "no rank stands out" in (
        alert.message
    )


def test_rank_stalled_without_a_culprit_points_at_a_crashed_rank() -> None:
    h, ranks = Harness("rank_stalled", seconds=3.0), job(3)
    start(h, ranks)
    h.send(ranks[2].bye(5, "error", error_type="RuntimeError", error_kind="exception"))
    beat(h, {r: ("backward", COLLECTIVE) for r in range(2)}, ranks[:2], 5)
    [alert] = h.firing()
    assert alert.ranks == [0, 1] and "they may wait for rank 2 (crashed)" in alert.message


def test_rank_stalled_leaves_a_declared_phase_alone_until_its_own_limit() -> None:
    h, ranks = Harness("rank_stalled", seconds=3.0, phase_seconds=8.0), job(2)
    start(h, ranks)
    beat(h, {0: ("eval", ()), 1: ("eval", ())}, ranks, 6, declared=True)
    assert h.open() == []  # a long evaluation is expected
    beat(h, {0: ("data", ()), 1: ("data", ())}, ranks, 2)  # after it: not yet a stall
    assert h.open() == []
    h.step(ranks, 6, dt=0.1)
    beat(h, {0: ("eval", ()), 1: ("eval", ())}, ranks, 10, step=6, declared=True)
    [alert] = h.firing()
    assert "stuck in declared phase eval" in alert.message and alert.threshold == 8.0


def test_rank_stalled_ignores_ranks_whose_heartbeats_stopped() -> None:
    h, ranks = Harness("rank_stalled", seconds=3.0), job(1, replicated=False)
    start(h, ranks)
    beat(h, {0: ("data", DATA)}, ranks, 1)
    h.tick(30.0)  # silent: trainer_silent's case, not a stall
    assert h.open() == []


def test_trainer_silent_fires_after_seconds_of_no_heartbeat_and_groups_ranks() -> None:
    h, ranks = Harness("trainer_silent", seconds=10.0), job(4)
    start(h, ranks)
    beat(h, {r: ("forward", ()) for r in range(4)}, ranks, 2)
    for _ in range(8):  # ranks 2 and 3 (one node) are gone; 0 and 1 keep beating
        beat(h, {0: ("backward", ()), 1: ("backward", ())}, ranks[:2], 1)
    assert h.open() == []
    beat(h, {0: ("backward", ()), 1: ("backward", ())}, ranks[:2], 3)
    [alert] = h.firing("trainer_silent")
    assert alert.ranks == [2, 3] and "not even a heartbeat" in alert.message
    assert "after step 5 in forward, host testhost" in alert.message


def test_trainer_silent_knows_a_newer_agent_from_its_phase_times_before_a_heartbeat() -> None:
    h, ranks = Harness("trainer_silent", seconds=10.0), job(2)
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    timed = {"phase_data_seconds": 0.001, "phase_forward_seconds": 0.003,
             "phase_backward_seconds": 0.01, "phase_optimizer_seconds": 0.001}  # fmt: skip
    h.step(ranks, 1, metrics=timed)  # killed before its first heartbeat
    h.tick(11.0)
    assert [a.ranks for a in h.firing()] == [[0, 1]]


def test_trainer_silent_gives_older_agents_without_phases_the_old_floor() -> None:
    h, r = Harness("trainer_silent", seconds=10.0, floor_seconds=60.0), FakeRank()
    start(h, [r])
    h.send(r.heartbeat(5), dt=1.0)  # an older agent: no phase
    h.tick(30.0)
    assert h.open() == []
    h.tick(31.0)
    assert h.firing("trainer_silent")


def crash(r: FakeRank, kind: str = "exception", message: str = "boom") -> object:
    types = {"oom": "torch.OutOfMemoryError", "distributed": "torch.distributed.DistBackendError"}
    return r.bye(
        5, "error", error_type=types.get(kind, "RuntimeError"), error_kind=kind,
        error_message=message, stack=("/src/injector.py:170 in FaultInjector._start",
                                      "/src/train.py:210 in train"),
    )  # fmt: skip


def test_rank_crashed_names_the_first_rank_and_its_followers_in_one_alert() -> None:
    h, ranks = Harness("rank_crashed"), job(4)
    start(h, ranks)
    h.send(crash(ranks[1], message="injected fault: rank 1 crashed on purpose"))  # type: ignore[arg-type]
    h.send(crash(ranks[0], "distributed", "Connection closed by peer"))  # type: ignore[arg-type]
    for r in ranks[2:]:
        h.send(r.bye(5, "terminated", signal=15))
    [alert] = h.firing("rank_crashed")
    assert (alert.rank, alert.ranks, alert.severity) == (1, [0, 1, 2, 3], "critical")
    assert alert.first_step == 5  # the last step it completed
    assert alert.message.startswith(
        "rank 1 crashed at step 6 (host testhost pid 101): RuntimeError: injected fault: rank 1 "
        "crashed on purpose at injector.py:170 in FaultInjector._start < train.py:210 in train"
    )
    assert "rank 0 distributed error torch.distributed.DistBackendError" in alert.message
    assert "rank 2 terminated (SIGTERM), rank 3 terminated (SIGTERM)" in alert.message
    assert "no bye from" not in alert.message


def test_rank_crashed_of_a_collective_points_at_ranks_without_a_bye() -> None:
    h, ranks = Harness("rank_crashed"), job(2)
    start(h, ranks)  # rank 1 is killed: no bye; rank 0's all-reduce fails
    h.send(crash(ranks[0], "distributed", "Connection reset by peer"))  # type: ignore[arg-type]
    [alert] = h.firing()
    assert alert.message.startswith("rank 0 failed in a collective at step 6")
    assert "; no bye from rank 1: a peer that died without one" in alert.message


def test_rank_crashed_names_out_of_memory_also_from_the_cpu_allocators_message() -> None:
    for kind, message in (
        ("oom", "CUDA out of memory. Tried to allocate 1.00 PiB"),
        ("exception", "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 PB"),
    ):
        h, ranks = Harness("rank_crashed"), job(2)
        start(h, ranks)
        h.send(crash(ranks[1], kind, message))  # type: ignore[arg-type]
        [alert] = h.firing()
        assert alert.message.startswith("rank 1 ran out of memory at step 6"), alert.message


def test_rank_crashed_is_silent_for_a_job_stopped_by_a_signal_or_closed() -> None:
    h, ranks = Harness("rank_crashed"), job(3)
    start(h, ranks)
    h.send(ranks[0].bye(5, "terminated", signal=15))
    h.send(ranks[1].bye(5, "terminated", signal=2))
    h.send(ranks[2].bye(5))
    h.tick(1.0)
    assert h.book.alerts() == []


def test_rank_missing_names_ranks_that_never_said_hello() -> None:
    h, ranks = Harness("rank_missing", seconds=20.0), job(8)
    for r in ranks:
        if r.rank not in (3, 6):
            h.send(r.hello(), dt=1.0)
    h.tick(10.0)
    assert h.open() == []  # still within the start-up window
    h.tick(15.0)
    [alert] = h.firing("rank_missing")
    assert (alert.rank, alert.ranks) == (3, [3, 6])
    assert "2 of 8 ranks never said hello" in alert.message and "ranks 3,6" in alert.message
    h.send(ranks[3].hello())
    h.send(ranks[6].hello())
    assert h.firing() == []


def test_rank_missing_is_silent_when_every_rank_said_hello() -> None:
    h, ranks = Harness("rank_missing", seconds=5.0), job(4)
    start(h, ranks)
    h.tick(60.0)
    assert h.book.alerts() == []


def test_older_agents_without_phases_raise_no_job_level_alert() -> None:
    job_rules = ("rank_stalled", "straggler", "replica_divergence", "rank_crashed", "rank_missing")
    h = Harness(rules={name: {} for name in job_rules})
    ranks = [FakeRank("old", r) for r in range(2)]  # world size 1 each, not replicated
    start(h, ranks)
    for _ in range(400):  # heartbeats without phases from the training thread
        h.now += 1.0
        for r in ranks:
            h.send(r.heartbeat(5), dt=0.0)
        h.tick()
    for r in ranks:
        h.send(r.bye(5))  # reason: close, as older agents say nothing else
    h.tick(1.0)
    assert h.book.alerts() == []
