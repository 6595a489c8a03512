"""The training loop, the optimizers and the schedule, and the process's signal handling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from gradwatch.trainer.model import GPT, GPTConfig
from gradwatch.trainer.optim import MuonAdamW, build_optimizer, lr_factor, param_groups
from tests.helpers.trainer_runs import run


def test_train_is_deterministic_with_seed() -> None:
    a = [float(r.loss) for r in run("--seed", "3", steps=5)]
    b = [float(r.loss) for r in run("--seed", "3", steps=5)]
    c = [float(r.loss) for r in run("--seed", "4", steps=5)]
    assert a == b and a != c


def test_train_logs_steps_val_loss_and_summary() -> None:
    lines: list[str] = []
    records = run("--log-every", "2", "--eval-every", "4", steps=4, lines=lines)
    assert [r.step for r in records] == [1, 2, 3, 4]
    assert records[3].val_loss is not None and records[2].val_loss is None
    step_lines = [x for x in lines if x.startswith("step ")]
    assert len(step_lines) == 3  # steps 1, 2, 4
    assert " | lr " in step_lines[0] and " | gnorm " in step_lines[0] and "tok/s" in step_lines[0]
    assert "val_loss" in step_lines[-1]
    assert lines[-1].startswith("done: 4/4 steps")


def test_optim_param_groups_named_and_decay_only_matrices() -> None:
    groups = param_groups(GPT(GPTConfig.preset("tiny")), weight_decay=0.1)
    names = [g["name"] for g in groups]
    assert names == [
        "tok_emb", "pos_emb",
        "blocks.0.norm", "blocks.0.attn", "blocks.0.mlp",
        "blocks.1.norm", "blocks.1.attn", "blocks.1.mlp",
        "ln_f", "head",
    ]  # fmt: skip
    for g in groups:
        assert g["weight_decay"] == (0.1 if g["params"][0].dim() >= 2 else 0.0)


def test_optim_muon_is_one_optimizer_over_every_parameter() -> None:
    model = GPT(GPTConfig.preset("tiny"))
    opt = build_optimizer("muon", model)
    assert isinstance(opt, MuonAdamW)
    covered = {id(p) for g in opt.param_groups for p in g["params"]}
    assert covered == {id(p) for p in model.parameters()}
    muon_names = {g["name"] for g in opt.muon.param_groups}
    assert muon_names == {"blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"}
    model(torch.randint(0, 256, (2, 8)), torch.randint(0, 256, (2, 8)))[1].backward()  # type: ignore[union-attr]
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert len(opt.state) == len(before)  # one shared state for both inner optimizers


def test_optim_lr_factor_warms_up_then_decays() -> None:
    assert lr_factor(1, 10, 100) == pytest.approx(0.1)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.55)
    assert lr_factor(100, 10, 100) == pytest.approx(0.1)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_train_process_stops_cleanly_on_signal_while_hanging(sig: int, code: int) -> None:
    cmd = [sys.executable, "-m", "gradwatch.trainer", "--no-monitor", "--size", "tiny"]
    cmd += ["--steps", "50", "--inject", "hang@3", "--threads", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if line.startswith("inject hang@3") or time.monotonic() > deadline:
            break
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == code
    assert "done: 2/50 steps" in out
