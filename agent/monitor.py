"""The optimizer and model hooks and the :class:`Monitor` they feed (:func:`watch` makes one).

Frame life cycle: the post-hook of sampled step ``t`` reduces everything into one device
buffer and starts its copy to the host; the frame stays open so that ``log()`` calls of the
same iteration attach to it, whether they come before or after ``optimizer.step()``. The next
post-hook (or ``close()``) seals it and hands it to the sender thread. A ``log()`` belongs to
the previous step when a backward pass ran after it and before the next pre-hook (counted by a
grad-accumulation hook on a few parameters), else to the coming step. The pre-hook only notes
that count and, on full steps, snapshots the update sample: one hook does the work.

The model's forward hooks and the optimizer hooks also move the :class:`PhaseClock`, which the
sender thread reads for its heartbeats; the exit hooks (``exits``) note how the run ends for
the ``bye``.
"""

from __future__ import annotations

import atexit
import logging
import math
import secrets
import sys
import threading
import time
from collections.abc import Callable
from time import perf_counter
from types import TracebackType
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradwatch import wire
from gradwatch.agent import exits, stacks
from gradwatch.agent.actions import Actions, AlertActions, parse_policies
from gradwatch.agent.config import AgentConfig
from gradwatch.agent.counters import Counters
from gradwatch.agent.exits import ExitInfo
from gradwatch.agent.layout import Segments, StepLayout
from gradwatch.agent.phases import BACKWARD, FORWARD, OPTIMIZER, DeclaredPhase, PhaseClock
from gradwatch.agent.stats import GradStats
from gradwatch.agent.step_buffer import PendingStats, to_host
from gradwatch.agent.system import ScalerTracker, memory_metrics
from gradwatch.agent.table import (
    Select,
    group_names,
    hello_builder,
    is_replicated,
    param_filter,
    param_table,
    table_signature,
)
from gradwatch.agent.transport import Outgoing, Sender
from gradwatch.agent.updates import UpdateSampler
from gradwatch.settings import ConfigError
from gradwatch.wire import metrics as m

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
Value = float | int | Tensor


class Monitor(AlertActions):
    """Watches one model/optimizer pair on one rank; create it with :func:`watch`. Alerts the
    collector sends back: :class:`AlertActions` (``should_stop``, ``on_alert``, ...)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: AgentConfig,
        *,
        scaler: Any = None,
        select: Select | None = None,
    ) -> None:
        """``select(name, param)`` keeps the parameters to watch (default: those matching
        ``config.params``, else all); nothing else of the model is hooked or measured."""
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
        self._replicated = config.replicated or is_replicated(model)
        self._select = select or param_filter(config.patterns)
        self._counters = Counters()
        """Tokens, samples and step durations over every step (sampled or not)."""
        self._clock = PhaseClock()
        self._exit: ExitInfo | None = None
        """How the run is ending, once a hook noted it (a signal, an uncaught exception)."""
        self._grad_hooks: list[RemovableHandle] = []
        self._generation = 0
        """Bumped by every table rebuild; flags from frames of an older table are ignored."""
        self._build_tables()
        if not self._params and self._select is not None:
            n = sum(1 for _ in model.parameters())
            raise ConfigError("params", f"selects none of the model's {n} parameters")
        self._scaler = ScalerTracker(scaler) if scaler is not None else None
        self._pending: PendingStats | None = None
        self._logged: list[tuple[int, dict[str, Value]]] = []
        self._backwards = 0
        self._mark = 0
        """``_backwards`` at the latest pre-hook: log() calls made before it belong to the
        frame sealed by the next post-hook (a closure may run backward inside ``step()``)."""
        self._full_now = False
        self._actions = Actions(parse_policies(config.on_alert))
        self._sender = Sender(
            config.endpoint,
            self._hello_builder(),
            heartbeat=self._heartbeat,
            heartbeat_seconds=config.heartbeat_seconds,
            connect_warn_seconds=config.connect_warn_seconds,
            who=f"run {config.run} rank {config.rank}",
            hwm=config.send_hwm,
            queue_size=config.queue_size,
            flush_seconds=config.flush_seconds,
            on_error=lambda exc: self._error("sender", exc),
            curve_keys=config.curve_keys,
            on_message=self._actions.receive,
        )
        # torch.compile must run the phase hooks as they are, around the compiled forward,
        # not trace them (a clock read is no graph op). torch.optim has imported dynamo.
        untraced: Callable[[F], F] = torch.compiler.disable
        self._handles = [
            model.register_forward_pre_hook(untraced(self._on_forward)),
            model.register_forward_hook(untraced(self._on_forward_end)),
            optimizer.register_step_pre_hook(self._pre_hook),
            optimizer.register_step_post_hook(self._post_hook),
        ]
        atexit.register(self._atexit)
        exits.attach(self, signals=config.report_signals)

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

    def phase(self, name: str) -> DeclaredPhase:
        """Declare what the training thread does now (``eval``, ``checkpoint``, ...): the
        heartbeats say so, and its time counts in none of the step's phase durations.

        ``with monitor.phase("eval"):`` holds it for the block (the model's forwards inside
        do not end it); ``monitor.phase("checkpoint")`` alone lasts until the next automatic
        phase change (the next forward or optimizer step). A name that is empty or longer
        than ``wire.MAX_PHASE_LEN`` raises ValueError."""
        return self._clock.declare(name)

    def close(self, reason: str | None = None) -> None:
        """Seal the open frame, send ``bye`` and stop the sender (idempotent).

        ``reason`` (one of ``wire.BYE_REASONS``) is inferred when not given: ``terminated``
        after SIGTERM/SIGINT, ``error`` with the exception's details after an uncaught
        exception or when called while one propagates (from a ``finally`` or ``except``
        block), else ``close``."""
        self._close(reason, None)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(None, exc)

    def note_exit(self, info: ExitInfo, thread: int | None) -> None:
        """Called by the exit hooks: how the run is ending (``thread``: where it happened,
        None for the whole process). The first note wins: a signal's ``Stop`` stays a signal."""
        if self._exit is None and (thread is None or thread == self._clock.thread):
            self._exit = info

    # ------------------------------------------------------------------------ hooks

    def _on_backward(self, _param: Tensor) -> None:
        self._backwards += 1

    def _on_forward(self, _module: nn.Module, _args: Any) -> None:
        try:
            self._clock.thread = threading.get_ident()
            self._clock.enter(FORWARD)
        except Exception as exc:
            self._error("forward-hook", exc)

    def _on_forward_end(self, _module: nn.Module, _args: Any, _output: Any) -> None:
        try:
            self._clock.enter(BACKWARD)
        except Exception as exc:
            self._error("forward-hook", exc)

    def _pre_hook(self, _opt: Any, _args: Any, _kwargs: Any) -> None:
        # Kept tiny: everything else happens once, in the post-hook.
        try:
            self._clock.thread = threading.get_ident()
            self._clock.enter(OPTIMIZER)
            self._mark = self._backwards
            full = (self.step + 1) % self.config.full_every == 0
            if full or self._stale or len(self._optimizer.param_groups) != self._n_groups:
                self._refresh_table(thorough=full)
            if full:
                with torch.no_grad():
                    self._full_now = True
                    self._sampler.before_step()
        except Exception as exc:
            self._error("pre-hook", exc)

    def _post_hook(self, _opt: Any, _args: Any, _kwargs: Any) -> None:
        try:
            step_time, phases = self._clock.end_step()
            recount = self._recount  # before sealing: the sender may build that frame at once
            self._seal(self._mark)
            self.step += 1
            self._actions.deliver(self.step)
            if step_time is not None:
                self._counters.observe_step(step_time)
            if self._full_now or self.step % self.config.every == 0:
                with torch.no_grad():
                    self._open_frame(step_time, phases, recount)
        except Exception as exc:
            self._full_now = False
            self._error("post-hook", exc)

    # ------------------------------------------------------------------------ internals

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

    def _build_tables(self) -> None:
        """(Re)build the parameter table, the reducers and the backward counters."""
        self._params = param_table(self._model, self._optimizer, self._select)
        self._tensors = [p for _, p, _ in self._params]
        self._signature = table_signature(self._tensors, self._optimizer)
        self._n_groups = len(self._optimizer.param_groups)
        self._stale = False
        """Set when a frame shows a tracked parameter that stopped requiring grad."""
        tracked = [p for _, p, info in self._params if info.requires_grad]
        self._stats = GradStats(tracked)
        self._sampler = UpdateSampler(tracked, self.config.sample_size)
        self._recount: tuple[int, ...] = ()
        """Rows flagged non-finite by the latest built frame (set by the sender thread)."""
        self._generation += 1
        for handle in self._grad_hooks:
            handle.remove()
        picks = {id(p): p for p in (tracked[:2] + tracked[-2:])}.values()
        self._grad_hooks = [
            p.register_post_accumulate_grad_hook(self._on_backward)  # type: ignore[no-untyped-call]
            for p in picks
        ]

    def _refresh_table(self, thorough: bool) -> None:
        """Rebuild the table and re-announce it when it changed: a parameter frozen or made
        trainable, cast to another dtype (bf16 changes grouping and underflow accounting),
        moved between param groups, or a group added. Cheap signs are checked every step (a
        group count; a frame showing a tracked parameter that no longer requires grad, set
        by ``_open_frame``); the whole signature, one pass over the parameters, only when
        ``thorough`` (full steps). Nothing here syncs. The open frame leaves first, so that
        every frame fits the hello sent before it."""
        changed = self._stale or len(self._optimizer.param_groups) != self._n_groups
        if not changed and thorough:
            changed = table_signature(self._tensors, self._optimizer) != self._signature
        if changed:
            self._seal(self._mark)
            self._build_tables()
            self._sender.request_hello(self._hello_builder())

    def _open_frame(
        self, step_time: float | None, phases: list[float], recount: tuple[int, ...]
    ) -> None:
        scaler = self._scaler.compute() if self._scaler is not None else []
        tensor_lrs: list[Tensor] = []
        lrs: list[float | None] = []
        for group in self._optimizer.param_groups:
            lr = group.get("lr", math.nan)
            if isinstance(lr, Tensor):
                tensor_lrs.append(lr.detach().clone())  # schedulers update it in place
                lrs.append(None)
            else:
                lrs.append(float(lr))
        full = self._sampler.after_step() if self._full_now else None
        self._full_now = False
        norms, nograd = self._stats.norms()
        if nograd and any(not self._stats.params[i].requires_grad for i in nograd):
            self._stale = True  # frozen since the table was built: re-announce next step
        layout = StepLayout(
            n=self._stats.n,
            scaler=len(scaler),
            lrs=len(tensor_lrs),
            full=full is not None,
            recount=len(recount),
        )
        parts = Segments(
            norms=norms,
            scaler=scaler,
            lrs=tensor_lrs,
            full=[] if full is None else [torch.cat((full[0], self._stats.details()), dim=1)],
            percentiles=[] if full is None else [full[1]],
            counts=[self._stats.nonfinite_counts(recount)] if recount else [],
        )
        generation = self._generation
        self._pending = PendingStats(
            config=self.config,
            session=self.session,
            step=self.step,
            wall=time.time(),
            layout=layout,
            host=to_host(layout.pack(parts)),
            nograd=tuple(nograd),
            lrs=lrs,
            step_time=step_time,
            phases=phases,
            memory=memory_metrics(self._stats.device, self.config.memory_limit_bytes),
            recount=recount,
            on_flags=lambda rows: self._set_recount(generation, rows),
        )

    def _set_recount(self, generation: int, rows: tuple[int, ...]) -> None:
        """Sender thread: the latest frame flagged ``rows``; count their elements next time
        (unless the table was rebuilt since: those rows mean other parameters now)."""
        if generation == self._generation:
            self._recount = rows

    def _seal(self, before: int | None) -> None:
        """Hand the open frame to the sender with the log() values that belong to it: those
        logged before backward pass number ``before`` (None: all of them)."""
        mine: dict[str, Value] = {}
        keep: list[tuple[int, dict[str, Value]]] = []
        for mark, values in self._logged:
            if before is None or mark < before:
                for k, v in values.items():
                    mine[k] = mine[k] + v if k in m.SUMMED and k in mine else v
            else:
                keep.append((mark, values))
        self._logged = keep
        self._counters.add_logged(mine)
        pending, self._pending = self._pending, None
        if pending is not None:
            self._sender.submit(pending.seal(mine, self._counters.snapshot()))

    def _hello_builder(self) -> Callable[[int, int], wire.Hello]:
        """Builds hellos for the current table (a snapshot: a rebuild brings its own)."""
        return hello_builder(
            self.config, self.session, self._params, self._stats.device,
            type(self._optimizer).__name__, self._replicated, group_names(self._optimizer),
        )  # fmt: skip

    def _heartbeat(self, seq: int, dropped: int) -> wire.Heartbeat:
        """Sender thread: the training thread's phase now, and its stack when stalled."""
        clock, cfg = self._clock, self.config
        phase, declared, since = clock.state
        now = perf_counter()
        stalled = now - clock.progress >= cfg.stall_seconds
        return wire.Heartbeat(
            run=cfg.run,
            rank=cfg.rank,
            session=self.session,
            seq=seq,
            step=self.step,
            time=time.time(),
            dropped=dropped,
            phase=phase,
            phase_seconds=max(now - since, 0.0),
            declared=declared,
            stack=stacks.of_thread(clock.thread) if stalled else (),
        )

    def _close(self, reason: str | None, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if reason is not None and reason not in wire.BYE_REASONS:
                self._error("close", ValueError(f"reason: one of {wire.BYE_REASONS}: {reason!r}"))
                reason = None
            info = exits.resolve(self._exit, reason, exc)
            for h in self._handles + self._grad_hooks:
                h.remove()
            with torch.no_grad():
                self._seal(None)
            step, session, cfg = self.step, self.session, self.config

            def bye(seq: int, dropped: int) -> wire.Frame:
                return wire.Bye(
                    cfg.run, cfg.rank, session, seq, step, time.time(), info.reason, dropped,
                    info.error_type, info.error_kind, info.error_message, info.stack,
                    info.signal,
                )  # fmt: skip

            self._sender.submit(Outgoing(bye), force=True)
            self._sender.close(cfg.close_timeout_seconds)
        except Exception as exc:
            self._error("close", exc)
        finally:
            atexit.unregister(self._atexit)
            exits.detach(self)

    def _error(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        key = f"{where}:{type(exc).__name__}"
        if key not in self._logged_errors:
            self._logged_errors.add(key)
            log.warning("gradwatch %s failed (training continues): %r", where, exc, exc_info=exc)

    def _atexit(self) -> None:
        self._close(None, getattr(sys, "last_value", None))
