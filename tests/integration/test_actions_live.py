"""Actions end to end: a real collector, a NaN in real training, the run stops itself.

Each run is given far more steps than it needs (``MAX_STEPS``): it ends early only because the
collector's alert came back. How many steps after the fault it took depends on the machine (a
step here is a millisecond); bench/action_latency.py measures the time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import gradwatch.agent as ga
from tests.helpers.processes import CollectorProcess
from tests.helpers.tiny_lightning import tiny_fit, tiny_module

MAX_STEPS = 100_000
FAULT = 5


def _collector(tmp_path: Path, action: str | None) -> CollectorProcess:
    extra: list[str] = []
    if action is not None:
        rules = tmp_path / "rules.toml"
        rules.write_text(f'[rules.non_finite]\naction = "{action}"\n')
        extra = ["--rules", str(rules)]
    return CollectorProcess(tmp_path, *extra).start()


def test_actions_live_plain_loop_stops_and_saves_at_a_nan(tmp_path: Path) -> None:
    collector = _collector(tmp_path, "stop")
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        mon = ga.watch(model, opt, run="plain", endpoint=collector.listen, rank=0, world_size=1)
        saved = tmp_path / "ckpt.pt"
        try:
            for step in range(1, MAX_STEPS + 1):
                loss = model(torch.randn(4, 8)).pow(2).mean()
                if step >= FAULT:
                    loss = loss * math.nan
                loss.backward()
                opt.step()
                opt.zero_grad()
                mon.log(loss=loss.detach())
                if mon.should_stop:
                    torch.save({"step": step, "model": model.state_dict()}, saved)
                    break
        finally:
            mon.close()
        assert step < MAX_STEPS, "the run never stopped"
        assert torch.load(saved)["step"] == step
        (action,) = [a for a in mon.alerts() if a.rule == "non_finite"]
        assert action.action == "stop" and action.step == FAULT
        alert = collector.wait_for_alert("non_finite", run="plain")
        assert alert["id"] == action.alert and alert["first_step"] == FAULT
        print(f"plain loop: fault at step {FAULT}, stopped at step {step}")
    finally:
        collector.stop()


def test_actions_live_hf_trainer_stops_and_saves(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    from gradwatch.agent.integrations.hf import GradwatchCallback

    class Poison(transformers.TrainerCallback):  # type: ignore[misc]
        """The weights turn NaN after step FAULT (a real fault: every gradient is NaN)."""

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any, **kw: Any) -> None:
            if state.global_step == FAULT:
                with torch.no_grad():
                    next(model.parameters()).fill_(math.nan)

    collector = _collector(tmp_path, None)  # the collector only notifies: the agent stops
    try:
        torch.manual_seed(0)
        cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=32, n_positions=8)
        model = transformers.GPT2LMHeadModel(cfg)
        data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 32, (64, 8))]
        out = tmp_path / "hf"
        args = transformers.TrainingArguments(
            output_dir=str(out), max_steps=MAX_STEPS, per_device_train_batch_size=2,
            report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, logging_steps=1,
        )  # fmt: skip
        cb = GradwatchCallback(run="hf", endpoint=collector.listen, on_alert={"non_finite": "stop"})
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=data, callbacks=[Poison(), cb]
        )
        trainer.train()
        stopped = trainer.state.global_step
        assert FAULT < stopped < MAX_STEPS
        assert (out / f"checkpoint-{stopped}").is_dir()  # saved on the way out
        assert cb.monitor is not None and cb.monitor.alerts()[0].action == "notify"
        print(f"HF Trainer: fault after step {FAULT}, stopped at step {stopped}")
    finally:
        collector.stop()


def test_actions_live_lightning_stops_and_saves(tmp_path: Path) -> None:
    pytest.importorskip("lightning.pytorch")
    from gradwatch.agent.integrations.lightning import GradwatchCallback

    collector = _collector(tmp_path, "stop")
    try:
        cb = GradwatchCallback(run="pl", endpoint=collector.listen, checkpoint_dir=str(tmp_path))
        trainer = tiny_fit(tiny_module(nan_from=FAULT), cb, MAX_STEPS, 64)
        assert FAULT < trainer.global_step < MAX_STEPS
        (path,) = cb.saved
        assert Path(path).is_file() and path.endswith(f"step={trainer.global_step}.ckpt")
        print(f"Lightning: fault at step {FAULT + 1}, stopped at step {trainer.global_step}")
    finally:
        collector.stop()
