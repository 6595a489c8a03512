"""``transformers.Trainer`` callback. transformers is imported only here.

HF logs the loss every ``logging_steps`` (averaged over them), so ``loss`` reaches gradwatch
at that cadence; per-parameter statistics still arrive every ``every`` steps via the hooks.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from gradwatch.agent.monitor import Monitor, watch


class GradwatchCallback(TrainerCallback):
    """Attach gradwatch once the trainer's optimizer exists; close at the end of training."""

    def __init__(self, run: str | None = None, endpoint: str | None = None, **watch_kwargs: Any):
        self.run = run
        self.endpoint = endpoint
        self.watch_kwargs = watch_kwargs
        self.monitor: Monitor | None = None

    def _attach(self, args: Any, model: Any, optimizer: Any) -> None:
        if self.monitor is not None or model is None or optimizer is None:
            return
        kwargs = dict(self.watch_kwargs)
        kwargs.setdefault("rank", getattr(args, "process_index", 0))
        kwargs.setdefault("world_size", getattr(args, "world_size", 1))
        self.monitor = watch(model, optimizer, self.run, self.endpoint, **kwargs)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._attach(args, kw.get("model"), kw.get("optimizer"))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._attach(args, kw.get("model"), kw.get("optimizer"))

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if self.monitor is None or not logs:
            return
        values = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and k != "epoch"}
        if values:
            self.monitor.log_step(**values)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.monitor is not None:
            self.monitor.close()
