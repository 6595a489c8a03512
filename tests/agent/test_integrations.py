"""HF Trainer and Lightning callbacks train a tiny model and deliver frames."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gradwatch import wire
from tests.helpers.frame_sink import FrameSink
from tests.helpers.tiny_lightning import tiny_fit, tiny_module


def _check(sink: FrameSink, n_params: int) -> None:
    sink.drain(until=wire.Bye)
    hello = sink.of(wire.Hello)[0]
    assert isinstance(hello, wire.Hello) and len(hello.tracked) == n_params
    stats = [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]
    assert len(stats) >= 15
    assert any(s.loss is not None for s in stats)
    assert all(s.lr and s.lr[0] > 0 for s in stats)
    assert all(len(s.rows) == 4 * len(wire.CHEAP_FIELDS) * n_params for s in stats)
    assert any(v > 0 for v in wire.unpack_columns(wire.CHEAP_FIELDS, stats[-1].rows)["grad_norm"])
    full = [s for s in stats if s.full]
    assert full and len(full[-1].full) == 4 * len(wire.FULL_FIELDS) * n_params


def test_integrations_hf_trainer_sends_stats(sink: FrameSink, tmp_path: object) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    from gradwatch.agent.integrations.hf import GradwatchCallback

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32)
    model = transformers.GPT2LMHeadModel(cfg)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (40, 16))]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=20,
        per_device_train_batch_size=2,
        logging_steps=5,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    cb = GradwatchCallback(run="hf", endpoint=sink.endpoint, full_every=10)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[cb])
    trainer.train()
    _check(sink, sum(1 for p in model.parameters() if p.requires_grad))
    stats = [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]
    assert [s.step for s in stats if s.loss is not None] == [5, 10, 15, 20]


def test_integrations_lightning_sends_stats(sink: FrameSink) -> None:
    pytest.importorskip("lightning.pytorch")
    from gradwatch.agent.integrations.lightning import GradwatchCallback

    cb = GradwatchCallback(run="pl", endpoint=sink.endpoint, full_every=10)
    tiny_fit(tiny_module(), cb, 20, 80)
    _check(sink, 4)
    stats = [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]
    assert all(s.loss is not None for s in stats)


def test_integrations_hf_trainer_declares_eval_and_checkpoint_phases(
    sink: FrameSink, tmp_path: object
) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    from gradwatch.agent.integrations.hf import GradwatchCallback

    seen: list[tuple[str, int, str, bool]] = []

    class Probe(transformers.TrainerCallback):  # type: ignore[misc]
        """Runs after gradwatch's callback and notes the phase it left."""

        def _note(self, where: str, state: Any) -> None:
            assert cb.monitor is not None
            phase, declared, _ = cb.monitor._clock.state
            seen.append((where, state.global_step, phase, declared))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._note("step_end", state)

        def on_prediction_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._note("predict", state)

        def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._note("evaluated", state)

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._note("saved", state)

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=16)
    model = transformers.GPT2LMHeadModel(cfg)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (24, 8))]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=10,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        eval_strategy="steps",
        eval_steps=10,
        save_strategy="steps",
        save_steps=5,
        logging_steps=5,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    cb = GradwatchCallback(run="hf", endpoint=sink.endpoint)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=data, eval_dataset=data[:4], callbacks=[cb, Probe()]
    )
    trainer.train()
    sink.drain(until=wire.Bye)
    marks = {(w, step): (phase, declared) for w, step, phase, declared in seen}
    assert marks[("step_end", 4)] == ("data", False)
    assert marks[("step_end", 5)] == ("checkpoint", True)  # saves at 5, no evaluation
    assert marks[("saved", 5)] == ("data", False)
    assert marks[("step_end", 10)] == ("eval", True)  # evaluates, then saves, at 10
    assert marks[("predict", 10)] == ("eval", True)  # the evaluation's forwards keep it
    assert marks[("evaluated", 10)] == ("checkpoint", True)
    assert marks[("saved", 10)] == ("data", False)
    assert cb.monitor is not None and cb.monitor.errors == 0


def test_integrations_lightning_declares_eval_and_checkpoint_phases(
    sink: FrameSink, tmp_path: Any
) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from gradwatch.agent.integrations.lightning import GradwatchCallback

    seen: list[tuple[str, str, bool]] = []

    class Probe(pl.Callback):  # type: ignore[misc,name-defined]
        def _note(self, where: str) -> None:
            assert cb.monitor is not None
            phase, declared, _ = cb.monitor._clock.state
            seen.append((where, phase, declared))

        def on_validation_batch_start(self, *args: Any, **kw: Any) -> None:
            self._note("validating")

        def on_validation_end(self, *args: Any) -> None:
            self._note("validated")

        def on_save_checkpoint(self, *args: Any) -> None:
            self._note("saving")

        def on_train_batch_start(self, *args: Any) -> None:
            self._note("batch")

    class Tiny(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(8, 1)

        def training_step(self, batch: list[torch.Tensor], idx: int) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def validation_step(self, batch: list[torch.Tensor], idx: int) -> None:
            self.net(batch[0])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(40, 8), torch.randn(40, 1))
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    cb = GradwatchCallback(run="pl", endpoint=sink.endpoint)
    saver = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path), every_n_train_steps=5)
    trainer = pl.Trainer(
        max_steps=10,
        accelerator="cpu",
        callbacks=[cb, Probe(), saver],
        logger=False,
        val_check_interval=5,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), loader, loader)
    sink.drain(until=wire.Bye)
    kinds = {(w, phase, declared) for w, phase, declared in seen}
    assert ("validating", "eval", True) in kinds
    assert ("validated", "data", False) in kinds  # ours ran first: the automatic phase is back
    assert ("saving", "checkpoint", True) in kinds
    assert all(declared is False for w, _, declared in seen if w == "batch")
    assert cb.monitor is not None and cb.monitor.errors == 0
