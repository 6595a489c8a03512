"""Lightning callback. lightning is imported only here.

Validation is declared as the phase ``eval`` (``on_validation_start`` to ``on_validation_end``)
and checkpointing as ``checkpoint`` (from ``on_save_checkpoint`` until training resumes: the
file is written after that hook returns, and Lightning has no hook for the end of it).

Alerts the collector sends back act at the end of a training batch: ``stop`` sets
``trainer.should_stop`` (after saving a checkpoint unless ``checkpoint_on_stop=False``),
``checkpoint`` saves one with ``trainer.save_checkpoint`` into ``checkpoint_dir`` (default:
the trainer's ``default_root_dir``) as ``gradwatch-step=N.ckpt``. Every rank of a run acts at
the same step (the action's ``at_step``), as ``save_checkpoint`` needs under DDP.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import Callback

from gradwatch.agent.attach import watch
from gradwatch.agent.monitor import Monitor
from gradwatch.agent.phases import DeclaredPhase


class GradwatchCallback(Callback):
    """Attach gradwatch in ``on_train_start`` to ``trainer.optimizers[0]``; loss from outputs."""

    def __init__(
        self,
        run: str | None = None,
        endpoint: str | None = None,
        *,
        checkpoint_on_stop: bool = True,
        checkpoint_dir: str | None = None,
        **watch_kwargs: Any,
    ):
        super().__init__()
        self.run = run
        self.checkpoint_on_stop = checkpoint_on_stop
        self.checkpoint_dir = checkpoint_dir
        self.saved: list[str] = []
        """Checkpoints written because of alerts."""
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
        self._act(trainer)

    def _act(self, trainer: Any) -> None:
        """Alerts sent back: save a checkpoint and/or stop."""
        monitor = self.monitor
        assert monitor is not None
        stop = monitor.should_stop and not trainer.should_stop
        if monitor.should_checkpoint or (stop and self.checkpoint_on_stop):
            folder = self.checkpoint_dir or trainer.default_root_dir
            path = os.path.join(folder, f"gradwatch-step={monitor.step}.ckpt")
            trainer.save_checkpoint(path)
            self.saved.append(path)
            monitor.checkpoint_done()
        if stop:
            trainer.should_stop = True

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
