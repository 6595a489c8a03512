"""The demo training loop, nanoGPT style: read it top to bottom.

``train(args, on_step=...)`` runs the loop in-process and returns one :class:`StepRecord` per
step, so tests drive it with a handful of steps and ``no_monitor=True``. Under torchrun the
same loop runs under DDP (see :mod:`gradwatch.trainer.distributed`).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from gradwatch.trainer.data import Corpus, load_corpus
from gradwatch.trainer.distributed import Dist, detect, weights_digest
from gradwatch.trainer.injector import FaultInjector
from gradwatch.trainer.model import GPT, GPTConfig
from gradwatch.trainer.optim import build_optimizer, lr_factor, set_lrs

__all__ = ["Monitor", "Run", "StepRecord", "Stop", "train", "monitor_settings"]


class Stop(BaseException):
    """Raised in the main thread by SIGTERM so the loop unwinds and closes the monitor.

    A BaseException, like KeyboardInterrupt: the signal may land inside any library's code
    (a gradwatch hook, say), and a library's ``except Exception`` guard must not swallow it.
    """


class Monitor(Protocol):
    """What the loop needs from ``gradwatch.agent.watch(...)``."""

    def log(self, **kwargs: Any) -> None: ...
    def phase(self, name: str) -> AbstractContextManager[object]: ...
    def close(self, reason: str = ...) -> None: ...
    @property
    def should_stop(self) -> bool: ...
    @property
    def should_checkpoint(self) -> bool: ...
    def checkpoint_done(self) -> None: ...
    def alerts(self) -> list[Any]: ...


class NullMonitor:
    """Stands in for the agent under ``--no-monitor`` so the loop has no ``if monitor:``."""

    def log(self, **kwargs: Any) -> None:
        pass

    def phase(self, name: str) -> AbstractContextManager[object]:
        return nullcontext()

    def close(self, reason: str = "close") -> None:
        pass

    should_stop = False
    should_checkpoint = False

    def checkpoint_done(self) -> None:
        pass

    def alerts(self) -> list[Any]:
        return []


@dataclass
class StepRecord:
    """What happened at one optimizer step (tensors stay tensors: no sync per step)."""

    step: int
    loss: torch.Tensor
    """The loss that was backpropagated (after fault injection), detached."""
    grad_norm: torch.Tensor
    """Global grad norm before clipping."""
    lr: float
    """Learning rate of the first param group (``tok_emb``; under muon ``blocks.0.attn``)."""
    lrs: dict[str, float]
    """Learning rate per named group."""
    seconds: float
    """Wall time of the step, injected sleeps included."""
    tokens: int
    val_loss: float | None = None


@dataclass
class Run:
    """The live objects of a run, handed to ``on_step`` callbacks."""

    model: GPT
    optimizer: torch.optim.Optimizer
    faults: FaultInjector
    corpus: Corpus
    dist: Dist = field(default_factory=Dist)
    records: list[StepRecord] = field(default_factory=list)


def monitor_settings(args: argparse.Namespace, model: GPT) -> dict[str, Any]:
    """Keyword arguments for ``gradwatch.agent.watch``: the flags that were given, and the
    agent's own defaults (``AgentConfig``) for those that were not."""
    from gradwatch.agent import AgentConfig, watch  # lazy: nothing else in the trainer needs it

    defaults = {f.name: f.default for f in dataclasses.fields(AgentConfig)}
    cfg = model.config
    # nanoGPT's estimate: 6N for the matmuls plus the attention scores.
    flops_per_token = 6 * model.num_params() + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
    settings: dict[str, Any] = {
        "run": args.run_name,
        "endpoint": args.endpoint,  # None: env GRADWATCH_ENDPOINT, else the agent's default
        "every": defaults["every"] if args.every is None else args.every,
        "full_every": defaults["full_every"] if args.full_every is None else args.full_every,
        "flops_per_token": flops_per_token,
        "peak_flops": args.peak_flops,
    }
    for name in ("heartbeat_seconds", "stall_seconds"):  # flags left unset: the agent's default
        value = getattr(args, name, None)
        settings[name] = defaults[name] if value is None else value
    limit = getattr(args, "memory_limit", None)
    if limit is not None and "memory_limit_bytes" in inspect.signature(watch).parameters:
        settings["memory_limit_bytes"] = limit
    return settings


def _attach_monitor(
    args: argparse.Namespace, model: GPT, watched: nn.Module, optimizer: Any
) -> Monitor:
    if getattr(args, "no_monitor", False):
        return NullMonitor()
    import gradwatch.agent  # lazy: nothing else in the trainer needs it

    monitor: Monitor = gradwatch.agent.watch(watched, optimizer, **monitor_settings(args, model))
    return monitor


@torch.no_grad()
def estimate_val_loss(
    model: GPT, corpus: Corpus, batch_size: int, iters: int, seed: int
) -> torch.Tensor:
    """Mean loss over ``iters`` validation batches (same batches every call, on every rank)."""
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.eval()
    losses = []
    for _ in range(iters):
        x, y = corpus.batch("val", batch_size, model.config.block_size, gen)
        losses.append(model(x.to(device), y.to(device))[1])
    model.train()
    return torch.stack(losses).mean()


def _answer_alerts(monitor: Monitor, step: int, say: Callable[[str], None]) -> bool:
    """What the collector asked of this rank (``GRADWATCH_ON_ALERT=non_finite=stop``, or a
    rule's ``action``): True to stop here. Every rank stops at the same step (the action's
    ``at_step``), so none is left waiting in a collective."""
    if monitor.should_checkpoint:
        say(f"step {step}: the collector asks for a checkpoint (this demo trainer keeps none)")
        monitor.checkpoint_done()
    if monitor.should_stop:
        rules = ", ".join(sorted({a.rule for a in monitor.alerts()}))
        say(f"step {step}: stopping, as asked on alert ({rules})")
        return True
    return False


def train(
    args: argparse.Namespace,
    on_step: Callable[[StepRecord, Run], None] | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> list[StepRecord]:
    """Train for ``args.steps`` steps; returns the per-step records.

    ``sleep`` and ``log`` let tests observe the ``hang``/``slow`` faults and silence output.
    Under torchrun only rank 0 prints the step log; every rank prints its injections and its
    summary, prefixed ``[rank R]``.
    """
    dist = detect()
    out = log or _print_line
    say = out if not dist.launched else (lambda line: out(f"[rank {dist.rank}] {line}"))

    # -----------------------------------------------------------------------------
    # setup: process group, threads, seed, data, model, optimizer
    dist.start()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    corpus = load_corpus()
    config = GPTConfig.preset(args.size)
    device = dist.device
    model = GPT(config).to(device)
    optimizer = build_optimizer(
        args.optimizer,
        model,
        lr=args.lr,
        aux_lr=args.aux_lr,
        weight_decay=args.weight_decay,
    )
    faults = FaultInjector(
        list(args.inject),
        model,
        optimizer,
        sleep=sleep,
        log=say,
        rank=dist.rank,
        memory_limit=getattr(args, "memory_limit", None),
    )
    # A detached module leaves parameters without gradient, which DDP must be told about.
    ddp = dist.wrap(model, find_unused_parameters=any(i.kind == "dead" for i in args.inject))
    run = Run(model, optimizer, faults, corpus, dist)
    # Batches depend on the seed only; each rank draws its own.
    batch_gen = torch.Generator().manual_seed(args.seed + dist.rank)
    tokens_per_step = args.batch_size * config.block_size
    peak = max(g["base_lr"] for g in optimizer.param_groups)
    if dist.rank == 0:
        where = ""
        if dist.launched:
            where = f" | DDP {dist.world_size} ranks, {dist.backend} on {device.type}"
        out(
            f"gradwatch trainer: {args.size} {model.num_params() / 1e6:.2f}M params | "
            f"{args.optimizer} lr {peak:.2e} | {len(corpus.train) / 1e3:.0f}k train / "
            f"{len(corpus.val) / 1e3:.0f}k val bytes | {tokens_per_step} tok/step | "
            f"{torch.get_num_threads()} threads{where}"
        )

    # -----------------------------------------------------------------------------
    # attach gradwatch (a do-nothing monitor under --no-monitor); it gets the DDP wrapper
    monitor = _attach_monitor(args, model, ddp, optimizer)

    # -----------------------------------------------------------------------------
    # the loop: steps count from 1, so "--inject nan@100" hits the 100th optimizer step
    t_start = time.perf_counter()
    val_loss: torch.Tensor | None = None
    close_reason = "close"
    dt = 0.0

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        return corpus.batch("train", args.batch_size, config.block_size, batch_gen)

    try:
        for step in range(1, args.steps + 1):
            t0 = time.perf_counter()
            faults.begin(step)  # may change group lr scales, dtypes or weights, or raise
            set_lrs(optimizer, lr_factor(step, args.warmup, args.steps))

            # data (a slow loader or a repeated subset when injected)
            x, y = faults.batch(step, draw, dt)
            x, y = x.to(device), y.to(device)

            # forward / backward on one batch (DDP all-reduces the gradients in backward)
            logits, loss = ddp(x, y)
            assert loss is not None
            loss = faults.loss(step, logits, y, loss)
            optimizer.zero_grad(set_to_none=True)
            faults.before_backward(step)  # a hang here leaves the other ranks in all-reduce
            loss.backward()  # type: ignore[no-untyped-call]
            faults.after_backward(step)

            # The high default clip never touches a healthy run and keeps an exploding norm
            # visible to the agent, which reads the gradients after this line.
            params = [p for p in model.parameters() if p.grad is not None]
            if args.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
            else:
                grad_norm = torch.nn.utils.get_total_norm(
                    [p.grad for p in params if p.grad is not None]
                )
            optimizer.step()
            faults.end(step)  # desync, leak, memory pressure

            # evaluation (before the monitor's log, so val_loss travels with this step), a
            # declared phase: heartbeats say "eval", and a long one is expected, not a stall
            scalars: dict[str, torch.Tensor] = {}
            if args.eval_every and (step % args.eval_every == 0 or step == args.steps):
                with monitor.phase("eval"):
                    val_loss = estimate_val_loss(
                        model, corpus, args.batch_size, args.eval_iters, args.seed
                    )
                    faults.evaluating(step)  # long_eval
                scalars["val_loss"] = val_loss

            # a tensor loss: the agent syncs it off the hot path, never .item() here
            monitor.log(
                loss=loss.detach(), tokens=tokens_per_step, samples=args.batch_size, **scalars
            )
            dt = time.perf_counter() - t0

            record = StepRecord(
                step=step,
                loss=loss.detach(),
                grad_norm=grad_norm.detach(),
                lr=optimizer.param_groups[0]["lr"],
                lrs={g["name"]: g["lr"] for g in optimizer.param_groups},
                seconds=dt,
                tokens=tokens_per_step,
                val_loss=float(scalars["val_loss"]) if "val_loss" in scalars else None,
            )
            run.records.append(record)
            if on_step is not None:
                on_step(record, run)
            if _answer_alerts(monitor, step, say):
                break  # a clean end: the bye says "close"

            # the one-line step log (the only place .item() syncs), on rank 0 only
            logged = step % args.log_every == 0 or step == 1 or "val_loss" in scalars
            if dist.rank == 0 and logged:
                line = (
                    f"step {step} | loss {loss.item():.4f} | lr {record.lr:.2e} | "
                    f"gnorm {grad_norm.item():.2f} | {dt * 1e3:.1f} ms | "
                    f"{tokens_per_step / dt / 1e3:.1f}k tok/s"
                )
                if record.val_loss is not None:
                    line += f" | val_loss {record.val_loss:.4f}"
                out(line)
    except (Stop, KeyboardInterrupt):
        close_reason = "terminated"
        raise
    except BaseException:
        close_reason = "error"
        raise

    # -----------------------------------------------------------------------------
    # shutdown: always close the monitor, print one summary line, leave the process group
    finally:
        monitor.close(close_reason)
        elapsed = time.perf_counter() - t_start
        say(_summary(args, run, elapsed, val_loss))
        dist.stop(clean=close_reason == "close")  # every rank got here: meet, then leave
    return run.records


def _print_line(line: str) -> None:
    # One write per line: under torchrun every rank shares one pipe, and print()'s separate
    # write of the newline (unbuffered, PYTHONUNBUFFERED=1) lets another rank's line in between.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _summary(
    args: argparse.Namespace, run: Run, elapsed: float, val_loss: torch.Tensor | None
) -> str:
    done = len(run.records)
    last = run.records[-1] if run.records else None
    summary = f"done: {done}/{args.steps} steps in {elapsed:.1f} s"
    if done:
        summary += f" ({done / elapsed:.1f} steps/s)"
    if last is not None:
        summary += f" | final loss {float(last.loss):.4f}"
        if not math.isfinite(float(last.loss)):
            summary += " (non-finite)"
    if val_loss is not None:
        summary += f" | val_loss {float(val_loss):.4f}"
    if run.faults.active:
        summary += f" | faults {', '.join(sorted(run.faults.active))}"
    if run.dist.launched:  # replicas in sync have equal digests
        summary += f" | weights {weights_digest(run.model)}"
    return summary
