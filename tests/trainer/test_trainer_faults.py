"""Each injected fault has its effect, read from the training numbers in-process."""

from __future__ import annotations

import statistics

import pytest
import torch

from gradwatch.trainer import faults as faults_mod
from gradwatch.trainer.faults import targets
from gradwatch.trainer.model import GPT, GPTConfig
from gradwatch.trainer.train import Run, StepRecord
from tests.helpers.trainer_runs import run


def _params(r: Run, names: list[str]) -> dict[str, torch.Tensor]:
    named = dict(r.model.named_parameters())
    return {n: named[n] for n in names}


def test_faults_nan_makes_loss_non_finite_exactly_at_step() -> None:
    records = run("--inject", "nan@6", steps=8)
    assert all(torch.isfinite(r.loss) for r in records[:5])
    assert not torch.isfinite(records[5].loss)
    assert not torch.isfinite(records[5].grad_norm)


def test_faults_spike_exceeds_ten_times_moving_average_on_demo() -> None:
    records = run("--inject", "spike@31", steps=32, size="demo")
    avg = statistics.mean(float(r.loss) for r in records[20:30])
    assert float(records[30].loss) > 10 * avg
    assert float(records[29].loss) < 2 * avg  # nothing before the step
    assert float(records[31].loss) < 2 * avg  # one bad batch, not a broken model


def test_faults_explode_grad_norm_passes_100_within_two_steps_on_demo() -> None:
    records = run("--inject", "explode@30", steps=32, size="demo")
    before = [float(r.grad_norm) for r in records[:29]]
    after = [float(r.grad_norm) for r in records[30:32]]
    assert max(before) < 100
    assert max(after) > 100


@pytest.mark.parametrize("optimizer", ["adamw", "muon", "sgd"])
def test_faults_freeze_keeps_params_fixed_while_grads_flow(optimizer: str) -> None:
    model = GPT(GPTConfig.preset("tiny"))
    names = targets("freeze", model)
    assert names == ["blocks.1.mlp.fc.weight", "blocks.1.mlp.proj.weight"]
    snap: dict[str, torch.Tensor] = {}
    checked: list[int] = []

    def on_step(rec: StepRecord, r: Run) -> None:
        params = _params(r, names)
        if rec.step >= 6:
            for n, p in params.items():
                assert torch.equal(p, snap[n]), f"{n} moved at step {rec.step}"
                assert p.grad is not None and p.grad.abs().sum() > 0
            assert rec.lrs["blocks.1.mlp"] == 0.0 and rec.lrs["blocks.0.mlp"] > 0
            checked.append(rec.step)
        snap.update({n: p.detach().clone() for n, p in params.items()})

    lines: list[str] = []
    run("--optimizer", optimizer, "--inject", "freeze@6", steps=9, on_step=on_step, lines=lines)
    assert checked == [6, 7, 8, 9]
    assert (
        "inject freeze@6: lr 0 for group blocks.1.mlp "
        "(blocks.1.mlp.fc.weight, blocks.1.mlp.proj.weight)" in lines
    )


def test_faults_bf16_norm_weights_stop_moving() -> None:
    names = targets("bf16", GPT(GPTConfig.preset("tiny")))
    assert names == ["blocks.0.ln1.weight", "blocks.0.ln2.weight"]
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def on_step(rec: StepRecord, r: Run) -> None:
        params = _params(r, names)
        seen[rec.step] = {n: p.detach().clone() for n, p in params.items()}
        if rec.step >= 5:
            assert all(p.dtype == torch.bfloat16 for p in params.values())
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())
            assert rec.lrs["blocks.0.norm"] <= faults_mod.BF16_LR

    run("--inject", "bf16@5", steps=10, on_step=on_step)
    assert seen[4]["blocks.0.ln1.weight"].dtype == torch.float32
    for n in names:
        assert torch.equal(seen[5][n], seen[10][n])  # every update rounded away
        assert (seen[10][n].float() - 1.0).abs().max() < 0.05  # still ~1.0


def test_faults_lr_low_divides_every_lr_by_100() -> None:
    clean = run(steps=8)
    low = run("--inject", "lr_low@6", steps=8)
    assert low[4].lrs == clean[4].lrs
    for step in (5, 6, 7):
        for name, lr in clean[step].lrs.items():
            assert low[step].lrs[name] == pytest.approx(lr / 100)


def test_faults_dead_layer_gets_no_grad() -> None:
    names = targets("dead", GPT(GPTConfig.preset("tiny")))
    assert "blocks.0.mlp.fc.weight" in names and "blocks.0.mlp.proj.weight" in names
    dead_steps: list[int] = []

    def on_step(rec: StepRecord, r: Run) -> None:
        named = dict(r.model.named_parameters())
        if rec.step < 5:
            assert all(named[n].grad is not None for n in names)
        else:
            assert all(named[n].grad is None for n in names)
            others = [p for n, p in named.items() if n not in names]
            assert all(p.grad is not None for p in others)
            dead_steps.append(rec.step)

    records = run("--inject", "dead@5", steps=8, on_step=on_step)
    assert dead_steps == [5, 6, 7, 8]
    assert all(torch.isfinite(r.loss) for r in records)


def test_faults_leak_retains_bytes_every_step() -> None:
    held: dict[int, int] = {}
    run(
        "--inject",
        "leak@3",
        steps=6,
        on_step=lambda rec, r: held.__setitem__(rec.step, r.faults.leaked_bytes),
    )
    mib4 = faults_mod.LEAK_BYTES
    assert [held[s] for s in range(1, 7)] == [0, 0, mib4, 2 * mib4, 3 * mib4, 4 * mib4]


def test_faults_slow_sleeps_twice_the_step_time() -> None:
    sleeps: list[float] = []
    state: dict[str, int] = {}

    def on_step(rec: StepRecord, r: Run) -> None:
        state[str(rec.step)] = r.faults.slow_sleeps

    run("--inject", "slow@4", steps=7, on_step=on_step, sleep=sleeps.append)
    assert [state[str(s)] for s in range(1, 8)] == [0, 0, 0, 1, 2, 3, 4]
    assert len(sleeps) == 4 and all(s > 0 for s in sleeps)


def test_faults_hang_is_reached_at_its_step() -> None:
    calls: list[tuple[float, int]] = []
    done: list[int] = []

    def sleep(seconds: float) -> None:
        calls.append((seconds, len(done)))

    run(
        "--inject",
        "hang@3",
        steps=4,
        sleep=sleep,
        on_step=lambda rec, r: done.append(rec.step),
    )
    assert calls == [(faults_mod.HANG_SECONDS, 2)]  # slept before step 3 ran


def test_faults_targets_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        targets("meltdown", GPT(GPTConfig.preset("tiny")))
