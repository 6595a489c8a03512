"""Faults made for the collector's newer rules (overfitting, plateau, vanishing gradients,
update ratios, weight norm jump, memory pressure): each has its effect on the tiny model within
a short run, read from the training numbers in-process."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from gradwatch.trainer import faults as faults_mod
from gradwatch.trainer.faults import targets
from gradwatch.trainer.injector import memory_in_use
from gradwatch.trainer.model import GPT, GPTConfig
from gradwatch.trainer.train import Run, StepRecord
from tests.helpers.trainer_runs import UpdateRatios, run

ONSET = 30
WARMUP = ("--warmup", "20")


def _tiny_targets(kind: str) -> list[str]:
    return targets(kind, GPT(GPTConfig.preset("tiny")))


def test_faults_overfit_val_loss_rises_while_train_loss_falls() -> None:
    records = run("--inject", f"overfit@{ONSET}", "--eval-every", "10", *WARMUP, steps=100)
    val = {r.step: r.val_loss for r in records if r.val_loss is not None}
    best = min(val.values())
    best_step = min(val, key=lambda s: val[s])
    assert ONSET <= best_step < 100
    assert val[100] > 1.1 * best  # val_divergence's default rise
    train_loss = [float(r.loss) for r in records]
    assert statistics.mean(train_loss[-10:]) < statistics.mean(train_loss[ONSET - 10 : ONSET]) - 1


def test_faults_overfit_repeats_one_batch() -> None:
    seen: list[torch.Tensor] = []

    def on_step(rec: StepRecord, r: Run) -> None:
        seen.append(r.faults.overfit_batches[0][0] if r.faults.overfit_batches else None)  # type: ignore[arg-type]

    run("--inject", "overfit@3", steps=6, on_step=on_step)
    assert seen[:2] == [None, None] and len({id(x) for x in seen[2:]}) == 1


def test_faults_plateau_lr_glides_down_without_a_jump_and_val_loss_stops_moving() -> None:
    records = run("--inject", f"plateau@{ONSET}", "--eval-every", "30", *WARMUP, steps=120)
    for name in records[0].lrs:
        lrs = [r.lrs[name] for r in records]
        changes = [a / b for a, b in zip(lrs[ONSET - 2 :], lrs[ONSET - 1 :], strict=False)]
        assert max(changes) < 1.5  # never a jump for lr_sanity
        assert lrs[-1] < 1e-3 * lrs[ONSET - 2]
    val = {r.step: r.val_loss for r in records if r.val_loss is not None}
    assert val[30] > val[60]  # still learning while the lr glides down...
    assert abs(val[120] - val[60]) < 0.005 * val[60]  # ...then nothing moves


def test_faults_vanish_first_block_gradients_below_one_percent_of_the_last() -> None:
    assert _tiny_targets("vanish") == [n for n in _tiny_targets("nan") if n.startswith("blocks.0.")]
    ratio: dict[int, float] = {}

    def on_step(rec: StepRecord, r: Run) -> None:
        def norm(prefix: str) -> float:
            grads = [p.grad for n, p in r.model.named_parameters() if n.startswith(prefix)]
            return float(torch.nn.utils.get_total_norm([g for g in grads if g is not None]))

        ratio[rec.step] = norm("blocks.0.") / norm("blocks.1.")

    records = run("--inject", f"vanish@{ONSET}", *WARMUP, steps=60, on_step=on_step)
    assert min(ratio[s] for s in range(2, ONSET)) > 0.1
    assert max(ratio[s] for s in range(ONSET, 61)) < 0.5e-2  # half the rule's 1%
    late = statistics.mean(float(r.loss) for r in records[-10:])
    assert late < statistics.mean(
        float(r.loss) for r in records[ONSET - 10 : ONSET]
    )  # Adam goes on


def test_faults_ratio_high_keeps_update_ratio_above_a_tenth_without_nan() -> None:
    names = _tiny_targets("ratio_high")
    assert names == ["blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight"]
    probe = UpdateRatios(*names, "blocks.1.attn.qkv.weight")
    records = run("--inject", f"ratio_high@{ONSET}", *WARMUP, steps=80, on_step=probe)
    after = range(ONSET, 81)
    for name in names:
        assert max(probe.ratios[name][s] for s in range(2, ONSET)) < 0.1
        assert statistics.median(probe.ratios[name][s] for s in after) > 0.5
    # Every step, some target moves by more than a tenth (seeds 1-7: at least 0.4).
    assert min(max(probe.ratios[n][s] for n in names) for s in after) > 0.2
    assert max(probe.ratios["blocks.1.attn.qkv.weight"][s] for s in after) < 0.1
    assert all(math.isfinite(float(r.loss)) for r in records)
    peak = records[0].lrs["blocks.0.attn"] * 20  # step 1 of a 20-step warmup
    assert records[-1].lrs["blocks.0.attn"] == pytest.approx(faults_mod.RATIO_HIGH_FACTOR * peak)


def test_faults_ratio_low_update_ratio_between_frozen_and_slow() -> None:
    names = _tiny_targets("ratio_low")
    probe = UpdateRatios(*names, "blocks.1.attn.qkv.weight")
    run("--inject", f"ratio_low@{ONSET}", *WARMUP, steps=80, on_step=probe)
    for name in names:
        after = [probe.ratios[name][s] for s in range(ONSET, 81)]
        assert 1e-12 < min(after) and max(after) < 1e-7, (min(after), max(after))
    assert min(probe.ratios["blocks.1.attn.qkv.weight"][s] for s in range(ONSET, 81)) > 1e-4


def test_faults_weight_jump_multiplies_one_weight_norm_by_twenty() -> None:
    assert _tiny_targets("weight_jump") == ["blocks.0.mlp.fc.weight"]
    norms: dict[int, dict[str, float]] = {}

    def on_step(rec: StepRecord, r: Run) -> None:
        norms[rec.step] = {n: float(p.detach().norm()) for n, p in r.model.named_parameters()}

    records = run("--inject", f"weight_jump@{ONSET}", *WARMUP, steps=ONSET + 5, on_step=on_step)
    for name in norms[ONSET]:
        jump = norms[ONSET][name] / norms[ONSET - 1][name]
        if name == "blocks.0.mlp.fc.weight":
            assert 19 < jump < 21
        else:
            assert 0.9 < jump < 1.1, name
    assert (
        norms[ONSET + 5]["blocks.0.mlp.fc.weight"] > 15 * norms[ONSET - 1]["blocks.0.mlp.fc.weight"]
    )
    assert all(math.isfinite(float(r.loss)) for r in records)


def test_faults_mem_pressure_fills_memory_to_just_under_the_limit() -> None:
    cpu = torch.device("cpu")
    limit = int(memory_in_use(cpu)) + (256 << 20)
    used: dict[int, float] = {}

    def on_step(rec: StepRecord, r: Run) -> None:
        used[rec.step] = memory_in_use(cpu) / limit

    lines: list[str] = []
    run("--inject", "mem_pressure@3", "--memory-limit", str(limit), steps=14, on_step=on_step,
        lines=lines)  # fmt: skip
    assert used[2] < 0.9
    assert 0.95 < used[14] < 1.0, used  # above memory_pressure's 95%, no OOM
    assert used[3] < used[4] < used[5]  # in steps, not at once
    assert any(x.startswith("mem_pressure: 9") for x in lines)


def test_faults_mem_pressure_needs_a_limit() -> None:
    from gradwatch.trainer.injector import FaultInjector
    from gradwatch.trainer.optim import build_optimizer

    model = GPT(GPTConfig.preset("tiny"))
    with pytest.raises(ValueError, match="--memory-limit"):
        FaultInjector(
            [faults_mod.Injection("mem_pressure", 3)], model, build_optimizer("adamw", model)
        )
