"""Faults aimed at one rank, and the faults made for torchrun jobs (raise, desync), in-process."""

from __future__ import annotations

import pytest
import torch

from gradwatch.trainer.distributed import weights_digest
from gradwatch.trainer.faults import Injection, parse_injection
from gradwatch.trainer.injector import FaultInjector, InjectedCrash
from gradwatch.trainer.model import GPT, GPTConfig
from gradwatch.trainer.optim import build_optimizer
from gradwatch.trainer.train import Run, StepRecord
from tests.helpers.trainer_runs import run


def _injector(rank: int, *specs: str) -> FaultInjector:
    model = GPT(GPTConfig.preset("tiny"))
    return FaultInjector(
        [parse_injection(s) for s in specs],
        model,
        build_optimizer("adamw", model),
        sleep=lambda s: None,
        log=lambda line: None,
        rank=rank,
    )


def test_faults_act_only_on_their_rank_or_on_every_rank() -> None:
    specs = ("slow@2:rank=1", "hang@4:rank=0", "nan@3")
    assert _injector(0, *specs).injections == [Injection("hang", 4, 0), Injection("nan", 3)]
    assert _injector(1, *specs).injections == [Injection("slow", 2, 1), Injection("nan", 3)]
    assert _injector(2, *specs).injections == [Injection("nan", 3)]


def test_faults_slow_sleeps_only_on_its_rank() -> None:
    ranks = {rank: _injector(rank, "slow@2:rank=1") for rank in (0, 1)}
    for inj in ranks.values():
        for step in (1, 2, 3):
            inj.batch(step, lambda: (torch.zeros(1), torch.zeros(1)), 0.01)
    assert ranks[0].slow_sleeps == 0 and ranks[0].slept_s == 0
    assert ranks[1].slow_sleeps == 2 and ranks[1].slept_s == pytest.approx(0.04, rel=1e-3)


def test_faults_raise_crashes_at_its_step_with_a_clear_message() -> None:
    done: list[int] = []
    lines: list[str] = []
    with pytest.raises(InjectedCrash, match=r"injected fault raise@3: rank 0 crashed"):
        run("--inject", "raise@3", steps=5, on_step=lambda rec, r: done.append(rec.step),
            lines=lines)  # fmt: skip
    assert done == [1, 2]
    assert lines[-1].startswith("done: 2/5 steps")  # the summary still comes
    assert isinstance(InjectedCrash("x"), RuntimeError)


def test_faults_desync_adds_noise_to_every_weight_after_its_step() -> None:
    weights: dict[str, dict[int, dict[str, torch.Tensor]]] = {"clean": {}, "desync": {}}

    def keep(which: str) -> object:
        def on_step(rec: StepRecord, r: Run) -> None:
            weights[which][rec.step] = {
                n: p.detach().clone() for n, p in r.model.named_parameters()
            }

        return on_step

    run(steps=4, on_step=keep("clean"))  # type: ignore[arg-type]
    lines: list[str] = []
    run("--inject", "desync@3", steps=4, on_step=keep("desync"), lines=lines)  # type: ignore[arg-type]
    clean, desync = weights["clean"], weights["desync"]
    assert all(torch.equal(clean[2][n], desync[2][n]) for n in clean[2])
    for n in clean[3]:
        diff = desync[3][n] - clean[3][n]
        assert 0.7e-2 < float(diff.std()) < 1.3e-2, n  # 1e-2 x randn on top of the same step
    assert any(x.startswith("inject desync@3:") for x in lines)


def test_faults_desync_for_every_rank_draws_each_ranks_own_noise() -> None:
    # The same fault on every rank must still make the replicas differ.
    ranks = {}
    for rank in (0, 1):
        torch.manual_seed(0)
        ranks[rank] = _injector(rank, "desync@2")
    assert weights_digest(ranks[0].model) == weights_digest(ranks[1].model)
    for inj in ranks.values():
        inj.end(1)
    assert weights_digest(ranks[0].model) == weights_digest(ranks[1].model)  # not yet
    for inj in ranks.values():
        inj.end(2)
    a, b = (dict(ranks[r].model.named_parameters()) for r in (0, 1))
    assert all(not torch.equal(a[n], b[n]) for n in a)


def test_faults_hang_sleeps_before_backward_and_slow_in_the_data_phase() -> None:
    # At the hang the step's gradients are cleared (forward done, no backward yet); in the
    # data phase of a slow step the previous step's gradients are still there.
    state: dict[str, Run] = {}
    seen: list[tuple[float, bool]] = []

    def sleep(seconds: float) -> None:
        grads = [p.grad for p in state["run"].model.parameters()]
        seen.append((seconds, all(g is None for g in grads)))

    def on_step(rec: StepRecord, r: Run) -> None:
        state["run"] = r

    run("--inject", "slow@2", "--inject", "hang@3", steps=3, sleep=sleep, on_step=on_step)
    from gradwatch.trainer.faults import HANG_SECONDS

    slow = [cleared for seconds, cleared in seen if seconds != HANG_SECONDS]
    hang = [cleared for seconds, cleared in seen if seconds == HANG_SECONDS]
    assert slow == [False, False] and hang == [True]
