"""Optimizer hooks, the :class:`Monitor` they feed, and :func:`watch`.

Frame life cycle: the post-hook of sampled step ``t`` reduces everything into one device
buffer and starts its copy to the host; the frame stays open so that ``log()`` calls of the
same iteration attach to it, whether they come before or after ``optimizer.step()``. The next
post-hook (or ``close()``) seals it and hands it to the sender thread. A ``log()`` belongs to
the previous step when a backward pass ran after it and before the next pre-hook (counted by a
grad-accumulation hook on a few parameters), else to the coming step. The pre-hook only notes
that count and, on full steps, snapshots the update sample: one hook does the work.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from gradwatch import wire
from gradwatch.agent.config import AgentConfig, default_rank_world, env_default
from gradwatch.agent.stats import GradStats
from gradwatch.agent.step_buffer import PendingStats, heartbeat_item, to_host
from gradwatch.agent.system import ScalerTracker, memory_metrics
from gradwatch.agent.transport import Outgoing, Sender
from gradwatch.agent.updates import UpdateSampler

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
Value = float | int | Tensor


class Monitor:
    """Watches one model/optimizer pair on one rank; create it with :func:`watch`."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: AgentConfig,
        *,
        scaler: Any = None,
    ) -> None:
        self.config = config
        self.session = secrets.token_hex(8)
        self.step = 0
        """Optimizer steps completed so far (the step number of the latest frame)."""
        self.errors = 0
        """Exceptions caught inside gradwatch hooks (each logged once per kind)."""
        self.closed = False
        self._logged_errors: set[str] = set()
        self._optimizer = optimizer
        self._model = model
        tracked = self._build_tables()
        self._scaler = ScalerTracker(scaler) if scaler is not None else None
        self._pending: PendingStats | None = None
        self._logged: list[tuple[int, dict[str, Value]]] = []
        self._backwards = 0
        self._mark = 0
        """``_backwards`` at the latest pre-hook: log() calls made before it belong to the
        frame sealed by the next post-hook (a closure may run backward inside ``step()``)."""
        self._full_now = False
        self._recount: tuple[int, ...] = ()
        """Rows flagged non-finite by the latest built frame (set by the sender thread)."""
        self._last_post: float | None = None
        self._last_frame = 0.0
        self._sender = Sender(
            config.endpoint,
            self._hello,
            hwm=config.send_hwm,
            queue_size=config.queue_size,
            flush_seconds=config.flush_seconds,
            on_error=lambda exc: self._error("sender", exc),
            curve_keys=config.curve_keys,
        )
        picks = {id(p): p for p in (tracked[:2] + tracked[-2:])}.values()
        self._handles = [
            p.register_post_accumulate_grad_hook(self._on_backward)  # type: ignore[no-untyped-call]
            for p in picks
        ]
        self._handles.append(optimizer.register_step_pre_hook(self._pre_hook))
        self._handles.append(optimizer.register_step_post_hook(self._post_hook))
        atexit.register(self._atexit)

    # ------------------------------------------------------------------------ public API

    @property
    def dropped(self) -> int:
        """Frames dropped so far (queue full, no collector, socket full)."""
        return int(self._sender.dropped)

    @property
    def sender(self) -> Sender:
        return self._sender

    def log(self, **values: Value) -> None:
        """Attach ``loss``, ``tokens``, ``samples`` and any scalars to this step's frame.

        Tensors are kept as they are and copied asynchronously; nothing waits for the device.
        ``tokens``/``samples`` logged several times in one step add up; other names overwrite.
        """
        self._log(values, after_step=False)

    def log_step(self, **values: Value) -> None:
        """Like :meth:`log`, but always for the step that just finished (for callbacks that
        run after ``optimizer.step()``, where the next backward may run inside ``step()``)."""
        self._log(values, after_step=True)

    def _log(self, values: dict[str, Value], after_step: bool) -> None:
        try:
            for v in values.values():
                if not isinstance(v, (int, float, Tensor)):
                    raise TypeError(f"log() takes numbers or tensors, got {type(v).__name__}")
                if isinstance(v, Tensor) and v.numel() != 1:
                    raise ValueError(f"log() takes one-element tensors, got shape {tuple(v.shape)}")
            clean = {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in values.items()}
            self._logged.append((-1 if after_step else self._backwards, clean))
        except Exception as exc:
            self._error("log", exc)

    def close(self, reason: str = "close") -> None:
        """Seal the open frame, send ``bye`` and stop the sender (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            for h in self._handles:
                h.remove()
            with torch.no_grad():
                self._seal(None)
            step, session, cfg = self.step, self.session, self.config

            def bye(seq: int, dropped: int) -> wire.Frame:
                return wire.Bye(cfg.run, cfg.rank, session, seq, step, time.time(), reason, dropped)

            self._sender.submit(Outgoing(bye))
            self._sender.close(cfg.close_timeout_seconds)
        except Exception as exc:
            self._error("close", exc)
        finally:
            atexit.unregister(self._atexit)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close("error" if exc_type is not None else "close")

    # ------------------------------------------------------------------------ hooks

    def _on_backward(self, _param: Tensor) -> None:
        self._backwards += 1

    def _pre_hook(self, _opt: Any, _args: Any, _kwargs: Any) -> None:
        # Kept tiny: everything else happens once, in the post-hook.
        self._mark = self._backwards
        if (self.step + 1) % self.config.full_every == 0:
            try:
                with torch.no_grad():
                    self._full_now = True
                    self._refresh_dtypes()
                    self._sampler.before_step()
            except Exception as exc:
                self._error("pre-hook", exc)

    def _post_hook(self, _opt: Any, _args: Any, _kwargs: Any) -> None:
        try:
            recount = self._recount  # before sealing: the sender may build that frame at once
            self._seal(self._mark)
            self.step += 1
            now = time.monotonic()
            step_time = None if self._last_post is None else now - self._last_post
            self._last_post = now
            if self._full_now or self.step % self.config.every == 0:
                with torch.no_grad():
                    self._open_frame(step_time, recount)
            elif now - self._last_frame >= self.config.heartbeat_seconds:
                self._last_frame = now
                cfg = self.config
                self._sender.submit(heartbeat_item(cfg.run, cfg.rank, self.session, self.step))
        except Exception as exc:
            self._full_now = False
            self._error("post-hook", exc)

    # ------------------------------------------------------------------------ internals

    def _build_tables(self) -> list[Tensor]:
        """(Re)build the parameter table and the per-dtype reducers; return tracked params."""
        self._params = _param_table(self._model, self._optimizer)
        tracked = [p for _, p, info in self._params if info.requires_grad]
        self._dtypes = tuple(p.dtype for p in tracked)
        self._stats = GradStats(tracked)
        self._sampler = UpdateSampler(tracked, self.config.sample_size)
        return tracked

    def _refresh_dtypes(self) -> None:
        """A parameter cast mid-run (say to bf16) changes grouping, underflow accounting and
        the hello's table: rebuild them and re-announce. Reading dtypes never syncs."""
        if tuple(p.dtype for _, p, info in self._params if info.requires_grad) != self._dtypes:
            self._build_tables()
            self._sender.request_hello()

    def _open_frame(self, step_time: float | None, recount: tuple[int, ...]) -> None:
        tail: list[Tensor] = []
        if self._scaler is not None:
            tail += self._scaler.compute()
        n_scaler = len(tail)
        lrs: list[float | None] = []
        for group in self._optimizer.param_groups:
            lr = group.get("lr", math.nan)
            if isinstance(lr, Tensor):
                tail.append(lr.detach().clone())  # schedulers update it in place
                lrs.append(None)
            else:
                lrs.append(float(lr))
        full = self._sampler.after_step() if self._full_now else None
        self._full_now = False
        if full is not None:
            updates, percentiles = full
            tail += [torch.cat((updates, self._stats.details()), dim=1), percentiles]
        if recount:
            tail.append(self._stats.nonfinite_counts(recount))
        norms, nograd = self._stats.norms()
        self._pending = PendingStats(
            config=self.config,
            session=self.session,
            step=self.step,
            wall=time.time(),
            n=self._stats.n,
            host=to_host(norms + tail),
            nograd=tuple(nograd),
            n_scaler=n_scaler,
            lrs=lrs,
            full=full is not None,
            step_time=step_time,
            memory=memory_metrics(self._stats.device),
            recount=recount,
            on_flags=self._set_recount,
        )
        self._last_frame = time.monotonic()

    def _set_recount(self, rows: tuple[int, ...]) -> None:
        """Sender thread: the latest frame flagged ``rows``; count their elements next time."""
        self._recount = rows

    def _seal(self, before: int | None) -> None:
        """Hand the open frame to the sender with the log() values that belong to it: those
        logged before backward pass number ``before`` (None: all of them)."""
        mine: dict[str, Value] = {}
        keep: list[tuple[int, dict[str, Value]]] = []
        for mark, values in self._logged:
            if before is None or mark < before:
                for k, v in values.items():
                    mine[k] = mine[k] + v if k in ("tokens", "samples") and k in mine else v
            else:
                keep.append((mark, values))
        self._logged = keep
        pending, self._pending = self._pending, None
        if pending is not None:
            self._sender.submit(pending.seal(mine))

    def _hello(self, seq: int, dropped: int) -> wire.Hello:
        cfg = self.config
        return wire.Hello(
            run=cfg.run,
            rank=cfg.rank,
            session=self.session,
            world_size=cfg.world_size,
            host=socket.gethostname()[:256],
            pid=os.getpid(),
            torch=torch.__version__[:64],
            device=str(self._stats.device),
            optimizer=type(self._optimizer).__name__[:128],
            params=tuple(info for _, _, info in self._params),
            every=cfg.every,
            full_every=cfg.full_every,
            seq=seq,
            time=time.time(),
        )

    def _error(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        key = f"{where}:{type(exc).__name__}"
        if key not in self._logged_errors:
            self._logged_errors.add(key)
            log.warning("gradwatch %s failed (training continues): %r", where, exc, exc_info=exc)

    def _atexit(self) -> None:
        self.close("error" if getattr(sys, "last_value", None) is not None else "close")


def _param_table(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> list[tuple[str, Tensor, wire.ParamInfo]]:
    group_of = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
    out: list[tuple[str, Tensor, wire.ParamInfo]] = []
    for name, p in model.named_parameters():
        info = wire.ParamInfo(
            name=name[: wire.MAX_NAME_LEN] or "?",
            shape=tuple(p.shape),
            dtype=str(p.dtype).removeprefix("torch."),
            numel=p.numel(),
            requires_grad=p.requires_grad,
            group=group_of.get(id(p), -1),
        )
        out.append((name, p, info))
    return out


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run: str | None = None,
    endpoint: str | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    every: int = 1,
    full_every: int = 50,
    scaler: Any = None,
    flops_per_token: float | None = None,
    peak_flops: float | None = None,
    curve_keys: str | None = None,
    config: AgentConfig | None = None,
) -> Monitor:
    """Attach gradwatch to ``optimizer`` (hooks only; the training loop needs no change).

    ``run``/``endpoint``/``curve_keys`` default to env ``GRADWATCH_RUN``/
    ``GRADWATCH_ENDPOINT``/``GRADWATCH_CURVE_KEYS``; rank and world size to
    torch.distributed, then env ``RANK``/``WORLD_SIZE``. A full ``config`` overrides every
    other setting.
    """
    if config is None:
        d_rank, d_world = default_rank_world()
        config = AgentConfig(
            run=env_default("RUN", run, None) or "",
            endpoint=env_default("ENDPOINT", endpoint, None) or "tcp://127.0.0.1:5555",
            rank=d_rank if rank is None else rank,
            world_size=d_world if world_size is None else world_size,
            every=every,
            full_every=full_every,
            flops_per_token=flops_per_token,
            peak_flops=peak_flops,
            curve_keys=env_default("CURVE_KEYS", curve_keys, None),
        )
    return Monitor(model, _unwrap(optimizer), config, scaler=scaler)


def _unwrap(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside wrappers that delegate ``step()`` without running its hooks
    (accelerate's ``AcceleratedOptimizer`` under ``transformers.Trainer``, Lightning's
    ``LightningOptimizer``); hooks must go on the object whose ``step()`` really runs."""
    seen = 0
    while not hasattr(optimizer, "_optimizer_step_pre_hooks") and seen < 8:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if inner is None:
            break
        optimizer, seen = inner, seen + 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"gradwatch.watch needs a torch.optim.Optimizer, got {type(optimizer)}")
    return optimizer
