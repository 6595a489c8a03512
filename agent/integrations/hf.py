"""``transformers.Trainer`` callback. transformers is imported only here.

HF logs the loss every ``logging_steps`` (averaged over them), so ``loss`` reaches gradwatch
at that cadence; per-parameter statistics still arrive every ``every`` steps via the hooks.
Evaluation and checkpointing are declared as the phases ``eval`` and ``checkpoint``: the
trainer decides on them in ``on_step_end``/``on_epoch_end`` (``control.should_evaluate``,
``control.should_save``) and reports them done in ``on_evaluate``/``on_save``.

Alerts the collector sends back act at the end of a step: ``stop`` sets
``control.should_training_stop`` (and ``control.should_save`` unless
``checkpoint_on_stop=False``), ``checkpoint`` sets ``control.should_save``.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from gradwatch.agent.attach import watch
from gradwatch.agent.monitor import Monitor
from gradwatch.agent.phases import DeclaredPhase

EVAL = "eval"
CHECKPOINT = "checkpoint"


class GradwatchCallback(TrainerCallback):
    """Attach gradwatch once the trainer's optimizer exists; close at the end of training."""

    def __init__(
        self,
        run: str | None = None,
        endpoint: str | None = None,
        *,
        checkpoint_on_stop: bool = True,
        **watch_kwargs: Any,
    ):
        self.run = run
        self.checkpoint_on_stop = checkpoint_on_stop
        self.endpoint = endpoint
        self.watch_kwargs = watch_kwargs
        self.monitor: Monitor | None = None
        self._held: dict[str, DeclaredPhase] = {}

    def _attach(self, args: Any, model: Any, optimizer: Any) -> None:
        if self.monitor is not None or model is None or optimizer is None:
            return
        kwargs = dict(self.watch_kwargs)
        kwargs.setdefault("rank", getattr(args, "process_index", 0))
        kwargs.setdefault("world_size", getattr(args, "world_size", 1))
        self.monitor = watch(model, optimizer, self.run, self.endpoint, **kwargs)

    def _hold(self, name: str) -> None:
        if self.monitor is not None and name not in self._held:
            self._held[name] = self.monitor.phase(name).__enter__()

    def _release(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is not None:
            held.__exit__(None, None, None)

    def _declare_coming(self, control: Any) -> None:
        """Checkpoint first, evaluation on top: HF evaluates, then saves."""
        if getattr(control, "should_save", False):
            self._hold(CHECKPOINT)
        if getattr(control, "should_evaluate", False):
            self._hold(EVAL)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._attach(args, kw.get("model"), kw.get("optimizer"))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._attach(args, kw.get("model"), kw.get("optimizer"))
        for name in (EVAL, CHECKPOINT):  # one that HF skipped after all ends here
            self._release(name)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._act(control)
        self._declare_coming(control)

    def _act(self, control: Any) -> None:
        """Alerts sent back: stop and/or save now (HF saves before it stops)."""
        monitor = self.monitor
        if monitor is None:
            return
        if monitor.should_checkpoint:
            control.should_save = True
            monitor.checkpoint_done()
        if monitor.should_stop and not control.should_training_stop:
            control.should_training_stop = True
            control.should_save = control.should_save or self.checkpoint_on_stop

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._declare_coming(control)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._release(EVAL)

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._release(CHECKPOINT)

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
            for name in (EVAL, CHECKPOINT):
                self._release(name)
            self.monitor.close()
