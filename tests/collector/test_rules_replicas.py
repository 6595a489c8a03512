"""straggler, replica_divergence and non_finite's origin on multi-rank jobs of fake ranks."""

from __future__ import annotations

import math

from tests.helpers.fake_rank import NAMES, FakeRank, Harness, job


def phases(data: float, forward: float, backward: float, opt: float = 0.001) -> dict[str, float]:
    return {
        "phase_data_seconds": data,
        "phase_forward_seconds": forward,
        "phase_backward_seconds": backward,
        "phase_optimizer_seconds": opt,
        "step_time_seconds": data + forward + backward + opt,
    }


HEALTHY = phases(0.001, 0.003, 0.010)
SLOW = phases(0.060, 0.003, 0.010)
WAITING = phases(0.001, 0.003, 0.069)  # under DDP the fast ranks wait in backward


def run_steps(
    h: Harness, ranks: list[FakeRank], first: int, last: int, slow: int | None, wait: bool = True
) -> None:
    """Steps of every rank; ``slow``'s data phase is slow, and under DDP (``wait``) the others
    wait for it in backward."""
    for step in range(first, last + 1):
        h.now += 1.0
        for r in ranks:
            others = WAITING if wait else HEALTHY
            m = HEALTHY if slow is None else SLOW if r.rank == slow else others
            h.send(r.stats(step, metrics=m), dt=0.0)


def test_straggler_names_the_ddp_rank_slow_outside_collectives_with_its_breakdown() -> None:
    h, ranks = Harness("straggler", for_seconds=5.0, for_steps=5), job(2)
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    run_steps(h, ranks, 1, 10, slow=None)
    run_steps(h, ranks, 11, 15, slow=1)
    assert h.open() == []  # 4 s: not yet for_seconds
    run_steps(h, ranks, 16, 18, slow=1)
    [alert] = h.firing("straggler")
    assert (alert.rank, alert.ranks, alert.severity) == (1, [1], "warning")
    assert alert.first_step == 13  # slow from 11: the median of 5 steps turns at the third
    assert alert.message.startswith(
        "rank 1 spends 63 ms a step outside collectives (data 60 ms, forward 3 ms) vs 4 ms for "
        "rank 0 (data 1 ms, forward 3 ms), 15.8x, for 5 s"
    ), alert.message
    assert "the others wait for it in backward (all-reduce: 69 ms)" in alert.message
    run_steps(h, ranks, 19, 30, slow=None)
    assert h.firing() == []


def test_straggler_among_four_ranks_compares_with_the_others_median() -> None:
    h, ranks = Harness("straggler", for_seconds=2.0, for_steps=3), job(4, replicated=False)
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    run_steps(h, ranks, 1, 10, slow=2, wait=False)
    [alert] = h.firing()
    assert alert.rank == 2 and "the other ranks' median" in alert.message
    assert "backward" in alert.message.split(" vs ")[0]  # no all-reduce: backward is its own


def test_straggler_needs_steps_as_well_as_time() -> None:
    h, ranks = Harness("straggler", for_seconds=5.0, for_steps=5), job(2)
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    run_steps(h, ranks, 1, 3, slow=1)
    h.now += 100.0  # the job pauses (a hang, a checkpoint): no evidence either way
    run_steps(h, ranks, 4, 5, slow=1)
    assert h.book.alerts() == []
    run_steps(h, ranks, 6, 7, slow=1)
    assert h.firing("straggler")


def test_straggler_stays_silent_for_equal_ranks_and_small_gaps() -> None:
    h, ranks = Harness("straggler", for_seconds=2.0), job(2)
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    run_steps(h, ranks, 1, 20, slow=None)
    for step in range(21, 40):  # 2x the other's own time, but 2% of the step: noise
        h.now += 1.0
        h.send(ranks[0].stats(step, metrics=phases(0.001, 0.001, 0.1)), dt=0.0)
        h.send(ranks[1].stats(step, metrics=phases(0.001, 0.003, 0.1)), dt=0.0)
    assert h.book.alerts() == []


def test_replica_divergence_names_the_odd_rank_of_three_on_a_full_step() -> None:
    h, ranks = Harness("replica_divergence"), job(3)
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    h.step(ranks, 1, full=True)
    assert h.open() == []
    h.step(ranks[:2], 2, full=True, dt=0.0)
    h.send(ranks[2].stats(2, weight={NAMES[3]: 5.2}))
    [alert] = h.firing("replica_divergence")
    assert (alert.rank, alert.ranks, alert.parameter, alert.first_step) == (2, [2], NAMES[3], 2)
    assert alert.message == (
        "step 2: weight norms of rank 2 disagree with ranks 0-1 on 1 parameter(s): "
        "blocks.0.mlp.fc.weight 5.2 vs 5 (full step 2) (rtol 1e-05)"
    )
    h.step(ranks, 3)  # gradients agree; the weights' verdict holds until the next full step
    assert h.firing()
    for step in (4, 5, 6):
        h.step(ranks, step, full=True)
    assert h.firing() == []


def test_replica_divergence_with_two_ranks_names_both_from_gradient_norms() -> None:
    h, ranks = Harness("replica_divergence"), job(2)
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    h.send(ranks[0].stats(1), dt=0.0)
    h.send(ranks[1].stats(1, grad={NAMES[0]: 0.5001}))
    [alert] = h.firing()
    assert alert.ranks == [0, 1] and "ranks 0-1 disagree (2 ranks, no majority)" in alert.message
    assert "gradient norms" in alert.message and alert.parameter == NAMES[0]


def test_replica_divergence_skips_sharded_non_finite_and_unreplicated_parameters() -> None:
    h, ranks = Harness("replica_divergence"), job(2, sharded=[NAMES[1]])
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    h.send(ranks[0].stats(1, full=True), dt=0.0)
    h.send(ranks[1].stats(1, grad={NAMES[1]: 9.0, NAMES[2]: math.nan}, weight={NAMES[1]: 7.0}))
    assert h.book.alerts() == []
    h2, plain = Harness("replica_divergence"), job(2, replicated=False)
    for r in plain:
        h2.send(r.hello(), dt=0.0)
    h2.send(plain[0].stats(1), dt=0.0)
    h2.send(plain[1].stats(1, grad={NAMES[0]: 3.0}))
    assert h2.book.alerts() == []  # independent models may differ


def test_non_finite_under_ddp_is_one_alert_naming_the_rank_whose_loss_went_nan_first() -> None:
    h, ranks = Harness("non_finite"), job(2)
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    h.step(ranks, 59)
    nan_grads = {n: math.nan for n in NAMES}
    # Rank 0's gradients turn NaN through the all-reduce, and its frames arrive first.
    h.send(ranks[0].stats(60, grad=nan_grads))
    h.send(ranks[0].stats(61, loss=math.nan, grad=nan_grads))
    h.send(ranks[1].stats(60, loss=math.nan, grad=nan_grads))
    [alert] = h.book.alerts()
    assert (alert.rank, alert.ranks, alert.first_step) == (1, [0, 1], 60)
    assert alert.message.startswith("loss is nan")


def test_replica_divergence_names_topk_parameters_and_counts_the_rest() -> None:
    h, ranks = Harness("replica_divergence", topk=2), job(4)
    for r in ranks:
        h.send(r.hello(), dt=0.0)
    h.step([ranks[0], ranks[2], ranks[3]], 1, full=True, dt=0.0)
    h.send(ranks[1].stats(1, weight={n: 6.0 for n in NAMES}))
    [alert] = h.firing()
    assert (alert.rank, alert.ranks) == (1, [1])
    assert "rank 1 disagree with ranks 0,2-3 on 8 parameter(s): " in alert.message
    assert f"{NAMES[0]} 6 vs 5; {NAMES[1]} 6 vs 5 (full step 1)" in alert.message
