"""Applies the scheduled faults (:mod:`gradwatch.trainer.faults`) inside the training loop.

The loop calls the injector at fixed points of every step, in this order:
:meth:`~FaultInjector.begin` (before the lr schedule and the data), :meth:`~FaultInjector.batch`
(the data phase), :meth:`~FaultInjector.loss`, :meth:`~FaultInjector.before_backward`,
:meth:`~FaultInjector.after_backward` and :meth:`~FaultInjector.end` (after the optimizer step).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradwatch.trainer import faults as f
from gradwatch.trainer.faults import KINDS, Injection, target_module, targets

__all__ = ["FaultInjector", "InjectedCrash", "memory_capacity", "memory_in_use"]


class InjectedCrash(RuntimeError):
    """The ``raise`` fault: a crash on purpose."""


def memory_in_use(device: torch.device) -> float:
    """Memory in use as the agent reports it: allocated device memory on CUDA, else the RSS."""
    from gradwatch.agent.system import memory_metrics  # lazy: only mem_pressure needs it
    from gradwatch.wire.metrics import MEMORY_ALLOCATED, RSS

    m = memory_metrics(device)
    return m[MEMORY_ALLOCATED] if MEMORY_ALLOCATED in m else m[RSS]


def memory_capacity(device: torch.device) -> float:
    """What there is to fill: the CUDA device's memory, else the host's RAM."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    from gradwatch.agent.system import physical_memory_bytes  # lazy, like memory_in_use

    return physical_memory_bytes()


@dataclass
class FaultInjector:
    """Applies this rank's scheduled faults to one model and optimizer; keeps counters tests
    can read. Injections aimed at another rank are dropped at construction."""

    injections: list[Injection]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    sleep: Callable[[float], None] = time.sleep
    """How to sleep (``hang``, ``slow``); tests pass a recorder."""
    log: Callable[[str], None] = print
    rank: int = 0
    """This process's rank: only injections for it (or for every rank) act."""
    memory_limit: int | None = None
    """``--memory-limit`` in bytes: the cap ``mem_pressure`` fills up to (required by it)."""
    active: set[str] = field(default_factory=set)
    """Kinds that have taken effect."""
    leaked: list[torch.Tensor] = field(default_factory=list)
    pressure: list[torch.Tensor] = field(default_factory=list)
    """Memory held by ``mem_pressure``."""
    pressure_reached: bool = False
    hang_reached: bool = False
    long_eval_done: bool = False
    slow_sleeps: int = 0
    slept_s: float = 0.0
    overfit_batches: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    held_norms: dict[torch.Tensor, torch.Tensor] = field(default_factory=dict)
    """Parameters ``ratio_high`` keeps at their norm of its onset (fast, but bounded)."""
    _slept_in_step: float = 0.0
    _pressure_chunk: float = 0.0

    def __post_init__(self) -> None:
        self.injections = [inj for inj in self.injections if inj.hits(self.rank)]
        if self.memory_limit is None and any(i.kind == "mem_pressure" for i in self.injections):
            raise ValueError("mem_pressure needs a memory limit (--memory-limit BYTES)")

    @property
    def leaked_bytes(self) -> int:
        """Bytes held by the ``leak`` fault."""
        return sum(t.numel() * t.element_size() for t in self.leaked)

    @property
    def pressure_bytes(self) -> int:
        """Bytes held by the ``mem_pressure`` fault."""
        return sum(t.numel() * t.element_size() for t in self.pressure)

    def _since(self, step: int, kind: str) -> list[Injection]:
        return [i for i in self.injections if i.kind == kind and i.step <= step]

    def _group(self, name: str) -> dict[str, Any]:
        for g in self.optimizer.param_groups:
            if g.get("name") == name:
                return g
        raise ValueError(f"optimizer has no param group named {name!r}")

    def _announce(self, inj: Injection, what: str) -> None:
        self.active.add(inj.kind)
        self.log(f"inject {inj}: {what.replace('STEP', f'step {inj.step}')}")

    # ---------------------------------------------------------------------------------------
    # before the lr schedule: faults that change the optimizer or the weights, or crash
    def begin(self, step: int) -> None:
        """Start the faults scheduled for ``step``; call before the lr schedule and the data."""
        for inj in self.injections:
            if inj.step == step:
                self._start(inj)
        for _ in self._since(step, "plateau"):
            for g in self.optimizer.param_groups:
                g["lr_scale"] = max(f.PLATEAU_FLOOR, g["lr_scale"] * f.PLATEAU_DECAY)

    def _start(self, inj: Injection) -> None:
        kind = inj.kind
        module = target_module(kind, self.model)
        names = ", ".join(targets(kind, self.model))
        if kind in ("explode", "lr_low"):
            factor = f.LR_LOW_FACTOR
            if kind == "explode":
                sgd = isinstance(self.optimizer, torch.optim.SGD)
                factor = f.EXPLODE_FACTOR_SGD if sgd else f.EXPLODE_FACTOR
            for g in self.optimizer.param_groups:
                g["lr_scale"] *= factor
                # A lost schedule: the exploded lr holds at factor x peak, not x a decayed value.
                g["unscheduled"] = g.get("unscheduled", False) or kind == "explode"
            what = "peak lr" if kind == "explode" else "lr"
            self._announce(inj, f"{what} x{factor:g} for all groups")
        elif kind in ("ratio_high", "ratio_low"):
            assert module is not None
            factor = f.RATIO_HIGH_FACTOR if kind == "ratio_high" else f.RATIO_LOW_FACTOR
            group = self._group(module)
            group["lr_scale"] *= factor
            if kind == "ratio_high":  # unscheduled and held at its norm: it keeps moving fast
                group["unscheduled"] = True
                self.held_norms.update({p: p.detach().norm() for p in group["params"]})
            self._announce(inj, f"lr x{factor:g} for group {module} ({names})")
        elif kind == "freeze":
            assert module is not None
            self._group(module)["lr_scale"] = 0.0
            self._announce(inj, f"lr 0 for group {module} ({names})")
        elif kind == "bf16":
            assert module is not None
            group = self._group(module)
            for p in group["params"]:
                p.data = p.data.to(torch.bfloat16)
                self.optimizer.state.pop(p, None)  # moments in the old dtype no longer fit
            group.update(base_lr=f.BF16_LR, lr_scale=1.0)
            self._announce(inj, f"bf16 params, lr {f.BF16_LR:g} for group {module} ({names})")
        elif kind == "dead":
            assert module is not None
            self.model.get_submodule(module).register_forward_hook(_detach_output)
            self._announce(inj, f"output of {module} detached ({names} get no grad)")
        elif kind == "weight_jump":
            with torch.no_grad():
                self.model.get_parameter(f.WEIGHT_JUMP_PARAM).mul_(f.WEIGHT_JUMP_FACTOR)
            self._announce(inj, f"{f.WEIGHT_JUMP_PARAM} x{f.WEIGHT_JUMP_FACTOR:g}")
        elif kind == "raise":
            self._announce(inj, "raising RuntimeError")
            raise InjectedCrash(f"injected fault {inj}: rank {self.rank} crashed on purpose")
        else:  # the others act later in the step
            self._announce(inj, KINDS[kind])

    # ---------------------------------------------------------------------------------------
    # the data phase
    def batch(
        self, step: int, draw: Callable[[], tuple[torch.Tensor, torch.Tensor]], last_seconds: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch for ``step``: ``draw()``, or a remembered one under ``overfit``.

        Under ``slow`` first sleeps ``SLOW_FACTOR - 1`` times ``last_seconds`` (the previous
        step's wall time, less the time this injector slept in it): a slow data loader.
        """
        slept, self._slept_in_step = self._slept_in_step, 0.0
        if self._since(step, "slow"):
            extra = (f.SLOW_FACTOR - 1.0) * max(0.0, last_seconds - slept)
            self.slow_sleeps += 1
            self.slept_s += extra
            t0 = time.perf_counter()
            self.sleep(extra)
            self._slept_in_step = time.perf_counter() - t0  # what really passed
        overfit = self._since(step, "overfit")
        if not overfit:
            return draw()
        if len(self.overfit_batches) < f.OVERFIT_BATCHES:
            self.overfit_batches.append(draw())
            return self.overfit_batches[-1]
        return self.overfit_batches[(step - overfit[0].step) % f.OVERFIT_BATCHES]

    # ---------------------------------------------------------------------------------------
    # forward and backward
    def loss(
        self, step: int, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> torch.Tensor:
        """Return the loss to backpropagate at ``step`` (changed only by ``nan`` and ``spike``)."""
        for inj in self.injections:
            if inj.step != step:
                continue
            if inj.kind == "nan":
                loss = loss * float("nan")
            elif inj.kind == "spike":
                # A corrupted batch (random targets) on confident, sharpened logits.
                gen = torch.Generator().manual_seed(step)
                bad = torch.randint(0, logits.size(-1), targets.shape, generator=gen)
                scaled = logits * f.SPIKE_LOGIT_SCALE
                loss = F.cross_entropy(
                    scaled.view(-1, logits.size(-1)), bad.to(logits.device).view(-1)
                )
        return loss

    def before_backward(self, step: int) -> None:
        """``hang``: stop here, so that under DDP the other ranks wait in all-reduce;
        ``oom``: run out of memory here (the rank crashes)."""
        for inj in self.injections:
            if inj.kind == "hang" and inj.step == step:
                self.hang_reached = True
                self.sleep(f.HANG_SECONDS)
            elif inj.kind == "oom" and inj.step == step:
                device = next(self.model.parameters()).device
                torch.empty(f.OOM_BYTES, dtype=torch.uint8, device=device)

    def after_backward(self, step: int) -> None:
        """``vanish``: scale the early blocks' gradients (after DDP's all-reduce)."""
        if not self._since(step, "vanish"):
            return
        with torch.no_grad():
            for name in targets("vanish", self.model):
                grad = self.model.get_parameter(name).grad
                if grad is not None:
                    grad.mul_(f.VANISH_SCALE)

    def evaluating(self, step: int) -> None:
        """Inside the evaluation of ``step``: ``long_eval`` makes the first one at or after its
        step last ``LONG_EVAL_SECONDS`` longer."""
        if self._since(step, "long_eval") and not self.long_eval_done:
            self.long_eval_done = True
            self.sleep(f.LONG_EVAL_SECONDS)

    # ---------------------------------------------------------------------------------------
    # after the optimizer step
    def end(self, step: int) -> None:
        """After the optimizer step: ``desync``, ``ratio_high``'s norm hold, ``leak`` and
        ``mem_pressure``."""
        with torch.no_grad():
            for inj in self.injections:
                if inj.kind == "desync" and inj.step == step:
                    gen = torch.Generator().manual_seed(1000 * step + self.rank)
                    for p in self.model.parameters():
                        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                        p.add_(noise.to(p.device), alpha=f.DESYNC_STD)
            # Without the hold the fast group's weights grow until its update ratio decays.
            for held, norm in self.held_norms.items():
                held.mul_(norm / held.norm())
        if self._since(step, "leak"):
            self.leaked.append(torch.ones(f.LEAK_BYTES // 4))  # ones: pages really touched
        if self._since(step, "mem_pressure") and not self.pressure_reached:
            self._press_memory()

    def _press_memory(self) -> None:
        assert self.memory_limit is not None
        device = next(self.model.parameters()).device
        target = f.MEM_PRESSURE_FILL * self.memory_limit
        used = memory_in_use(device)
        if not self._pressure_chunk:
            self._pressure_chunk = max(1 << 20, (target - used) / f.MEM_PRESSURE_STEPS)
        if used >= target:
            self.pressure_reached = True
            self.log(f"mem_pressure: {used / self.memory_limit:.1%} of the limit in use")
            return
        n = int(min(self._pressure_chunk, target - used))
        self.pressure.append(torch.ones(n, dtype=torch.uint8, device=device))  # pages touched


def _detach_output(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    return output.detach()
