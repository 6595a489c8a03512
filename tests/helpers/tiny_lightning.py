"""A tiny LightningModule and its Trainer, for the callback tests (Lightning imported lazily:
callers skip with ``pytest.importorskip("lightning.pytorch")`` first)."""

from __future__ import annotations

import math
from typing import Any

import torch


def tiny_module(nan_from: int | None = None) -> Any:
    """An 8→16→1 regressor trained by SGD; its loss turns NaN from step ``nan_from``."""
    import lightning.pytorch as pl

    class Tiny(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 1))

        def training_step(self, batch: list[torch.Tensor], idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            bad = nan_from is not None and self.global_step >= nan_from
            return loss * math.nan if bad else loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return Tiny()


def tiny_fit(module: Any, callback: Any, max_steps: int, samples: int) -> Any:
    """Train ``module`` on ``samples`` random pairs (batches of 4) with ``callback``, on CPU,
    quietly; returns the Trainer."""
    import lightning.pytorch as pl

    torch.manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(samples, 8), torch.randn(samples, 1))
    trainer = pl.Trainer(
        max_steps=max_steps, accelerator="cpu", callbacks=[callback], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(ds, batch_size=4))
    return trainer
