"""Lightning callback. lightning is imported only here.

Validation is declared as the phase ``eval`` (``on_validation_start`` to ``on_validation_end``)
and checkpointing as ``checkpoint`` (from ``on_save_checkpoint`` until training resumes: the
file is written after that hook returns, and Lightning has no hook for the end of it).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback

from gradwatch.agent.attach import watch
from gradwatch.agent.monitor import Monitor
from gradwatch.agent.phases import DeclaredPhase


class GradwatchCallback(Callback):
    """Attach gradwatch in ``on_train_start`` to ``trainer.optimizers[0]``; loss from outputs."""

    def __init__(self, run: str | None = None, endpoint: str | None = None, **watch_kwargs: Any):
        super().__init__()
        self.run = run
        self.endpoint = endpoint
        self.watch_kwargs = watch_kwargs
        self.monitor: Monitor | None = None
        self._eval: DeclaredPhase | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is None and trainer.optimizers:
            kwargs = dict(self.watch_kwargs)
            kwargs.setdefault("rank", trainer.global_rank)
            kwargs.setdefault("world_size", trainer.world_size)
            self.monitor = watch(
                pl_module, trainer.optimizers[0], self.run, self.endpoint, **kwargs
            )

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.monitor is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.monitor.log_step(loss=loss)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None and self._eval is None:
            self._eval = self.monitor.phase("eval").__enter__()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        held, self._eval = self._eval, None
        if held is not None:
            held.__exit__(None, None, None)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: Any) -> None:
        if self.monitor is not None:
            self.monitor.phase("checkpoint")

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:
            self.on_validation_end(trainer, pl_module)
            self.monitor.close()
