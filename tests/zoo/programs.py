"""Healthy training programs of the kinds users run, each watched by gradwatch.

Every program trains a real model on generated data that has a learnable signal (so the loss
falls the way a healthy run's does), for ``steps`` optimizer steps, reporting to ``endpoint``
as run ``run``. ``python -m tests.zoo NAME --endpoint E --run R --steps N`` runs one.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import gradwatch.agent as ga

SEED = 1234


@dataclass(frozen=True)
class Job:
    endpoint: str
    run: str
    steps: int
    full_every: int = 10


def _teacher(d_in: int, d_out: int, n: int, noise: float, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` samples of a fixed random two-layer teacher with noise: a learnable signal."""
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(d_in, 32, generator=gen) / math.sqrt(d_in)
    w2 = torch.randn(32, d_out, generator=gen) / math.sqrt(32)
    x = torch.randn(n, d_in, generator=gen)
    y = torch.tanh(x @ w1) @ w2 + noise * torch.randn(n, d_out, generator=gen)
    return x, y


def _batches(x: Tensor, y: Tensor, size: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(0, len(x), (size,), generator=gen)
        yield x[idx], y[idx]


def _mlp(d_in: int, d_out: int, width: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Linear(d_in, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
        nn.Linear(width, d_out),
    )  # fmt: skip


def _loop(
    job: Job,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_of: Callable[[], Tensor],
    *,
    samples: int,
    accumulate: int = 1,
    schedule: Any = None,
    autocast: bool = False,
) -> None:
    """The plain loop users write: forward, backward (``accumulate`` micro-batches), step."""
    mon = ga.watch(model, opt, run=job.run, endpoint=job.endpoint, full_every=job.full_every)
    try:
        for _ in range(job.steps):
            opt.zero_grad(set_to_none=True)
            total = torch.zeros(())
            for _ in range(accumulate):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    loss = loss_of() / accumulate
                loss.backward()  # type: ignore[no-untyped-call]
                total += loss.detach().float()
            opt.step()
            if schedule is not None:
                schedule.step()
            mon.log(loss=total, samples=samples * accumulate)
    finally:
        mon.close()


# ----------------------------------------------------------------------------- programs


def mlp_one_output(job: Job) -> None:
    """An MLP regressor ending in a ``Linear(64, 1)`` head (its 1-element bias grows fast)."""
    torch.manual_seed(SEED)
    x, y = _teacher(32, 1, 4096, 0.05, SEED)
    data = _batches(x, y, 64, SEED)
    model = _mlp(32, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_of() -> Tensor:
        xb, yb = next(data)
        return nn.functional.mse_loss(model(xb), yb)

    _loop(job, model, opt, loss_of, samples=64)


def cnn(job: Job) -> None:
    """A small CNN classifying 12x12 images whose class is set by a hidden pattern."""
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    patterns = torch.randn(4, 1, 12, 12, generator=gen)
    labels = torch.randint(0, 4, (4096,), generator=gen)
    images = patterns[labels] + 0.8 * torch.randn(4096, 1, 12, 12, generator=gen)
    data = _batches(images, labels, 64, SEED)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 3 * 3, 4),
    )  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def loss_of() -> Tensor:
        xb, yb = next(data)
        return nn.functional.cross_entropy(model(xb), yb)

    _loop(job, model, opt, loss_of, samples=64)


def bf16_autocast(job: Job) -> None:
    """An MLP trained under bf16 autocast with fp32 master weights (the right way)."""
    torch.manual_seed(SEED)
    x, y = _teacher(32, 4, 4096, 0.05, SEED)
    data = _batches(x, y, 64, SEED)
    model = _mlp(32, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_of() -> Tensor:
        xb, yb = next(data)
        return nn.functional.mse_loss(model(xb).float(), yb)

    _loop(job, model, opt, loss_of, samples=64, autocast=True)


def grad_accumulation(job: Job) -> None:
    """Four micro-batches per optimizer step."""
    torch.manual_seed(SEED)
    x, y = _teacher(32, 4, 4096, 0.05, SEED)
    data = _batches(x, y, 16, SEED)
    model = _mlp(32, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_of() -> Tensor:
        xb, yb = next(data)
        return nn.functional.mse_loss(model(xb), yb)

    _loop(job, model, opt, loss_of, samples=16, accumulate=4)


def cosine_restarts(job: Job) -> None:
    """Linear warmup, then cosine annealing with warm restarts every 100 steps."""
    torch.manual_seed(SEED)
    x, y = _teacher(32, 4, 4096, 0.05, SEED)
    data = _batches(x, y, 64, SEED)
    model = _mlp(32, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.05, total_iters=30)
    cosine = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=100, eta_min=1e-5)
    schedule = torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[30])

    def loss_of() -> Tensor:
        xb, yb = next(data)
        return nn.functional.mse_loss(model(xb), yb)

    _loop(job, model, opt, loss_of, samples=64, schedule=schedule)


def frozen_backbone(job: Job) -> None:
    """Fine-tuning: a backbone with ``requires_grad=False`` and a trainable head."""
    torch.manual_seed(SEED)
    x, y = _teacher(32, 4, 4096, 0.05, SEED)
    data = _batches(x, y, 64, SEED)
    backbone = nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 64), nn.GELU())
    for p in backbone.parameters():
        p.requires_grad_(False)
    model = nn.Sequential(backbone, nn.Linear(64, 4))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def loss_of() -> Tensor:
        xb, yb = next(data)
        return nn.functional.mse_loss(model(xb), yb)

    _loop(job, model, opt, loss_of, samples=64)


def hf_trainer(job: Job) -> None:
    """``transformers.Trainer`` on a tiny GPT-2 with the gradwatch callback."""
    import transformers

    from gradwatch.agent.integrations.hf import GradwatchCallback

    torch.manual_seed(SEED)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32)
    model = transformers.GPT2LMHeadModel(cfg)
    gen = torch.Generator().manual_seed(SEED)
    base = torch.arange(16) % 8  # a repeating pattern: a signal to learn
    ids = (base + torch.randint(0, 8, (2048, 1), generator=gen)) % 64
    data = [{"input_ids": row, "labels": row} for row in ids]
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, max_steps=job.steps, per_device_train_batch_size=8, logging_steps=10,
            learning_rate=1e-3, warmup_steps=20, report_to=[], use_cpu=True, save_strategy="no",
            disable_tqdm=True, seed=SEED,
        )  # fmt: skip
        cb = GradwatchCallback(run=job.run, endpoint=job.endpoint, full_every=job.full_every)
        transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[cb]).train()


def lightning(job: Job) -> None:
    """A LightningModule with the gradwatch callback."""
    import lightning.pytorch as pl

    from gradwatch.agent.integrations.lightning import GradwatchCallback

    class Regressor(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _mlp(32, 4)

        def training_step(self, batch: list[Tensor], idx: int) -> Tensor:
            xb, yb = batch
            return nn.functional.mse_loss(self.net(xb), yb)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    torch.manual_seed(SEED)
    x, y = _teacher(32, 4, 4096, 0.05, SEED)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True
    )
    cb = GradwatchCallback(run=job.run, endpoint=job.endpoint, full_every=job.full_every)
    trainer = pl.Trainer(
        max_steps=job.steps, accelerator="cpu", callbacks=[cb], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Regressor(), loader)


PROGRAMS: dict[str, Callable[[Job], None]] = {
    "mlp-1-output": mlp_one_output,
    "cnn": cnn,
    "bf16-autocast": bf16_autocast,
    "grad-accumulation": grad_accumulation,
    "cosine-restarts": cosine_restarts,
    "frozen-backbone": frozen_backbone,
    "hf-trainer": hf_trainer,
    "lightning": lightning,
}
"""Healthy programs by name (the demo GPT's AdamW, Muon and SGD runs come from the trainer)."""
