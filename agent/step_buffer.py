"""Turning device buffers into wire frames: the async host copy (training thread) and the
unpacking into :class:`wire.Stats` (sender thread)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gradwatch import wire
from gradwatch.agent.config import AgentConfig
from gradwatch.agent.counters import CounterSnapshot
from gradwatch.agent.layout import StepLayout
from gradwatch.agent.stats import F32_EXACT
from gradwatch.agent.system import throughput_metrics
from gradwatch.agent.transport import Outgoing
from gradwatch.wire import metrics as m

_PERCENTILES = tuple(m.grad_percentile(p) for p in m.GRAD_PERCENTILES)
_PHASE_KEYS = tuple(m.phase_seconds(p) for p in m.STEP_PHASES)


@dataclass
class HostCopy:
    """Tensors whose values the sender thread reads once ``ready`` says the copy is done."""

    parts: list[Tensor]
    ready: Callable[[], bool] | None = None

    def values(self) -> list[float]:
        """All elements of ``parts``, flattened in order (sender thread, once ready)."""
        out: list[float] = []
        for t in self.parts:
            out.extend(t.reshape(-1).tolist())
        return out


def to_host(parts: list[Tensor], dtype: torch.dtype = torch.float32) -> HostCopy:
    """Start moving ``parts`` to the host as ``dtype`` without blocking (one pinned copy +
    event on CUDA).

    CPU tensors are handed over as they are: reading them needs no device, and the training
    thread saves the op that would pack them into one buffer."""
    device = parts[0].device if parts else torch.device("cpu")
    if all(t.device == device for t in parts) and device.type == "cpu":
        return HostCopy(parts)
    flat = [t.detach().reshape(-1).to(device, dtype) for t in parts]
    buf = flat[0] if len(flat) == 1 else torch.cat(flat)
    if device.type == "cuda":
        host = torch.empty(buf.shape, dtype=buf.dtype, pin_memory=True)
        host.copy_(buf, non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record()
        return HostCopy([host], event.query)
    return HostCopy([buf.to("cpu", non_blocking=True)])  # other backends: best effort


def _number(values: list[float], v: Any, slots: dict[int, int]) -> float:
    """A logged value as a float: device tensors from their host copy, the rest directly."""
    slot = slots.get(id(v)) if isinstance(v, Tensor) else None
    return float(v) if slot is None else values[slot]


@dataclass
class PendingStats:
    """One sampled step whose frame is still open for ``log()`` values."""

    config: AgentConfig
    session: str
    step: int
    wall: float
    layout: StepLayout
    host: HostCopy
    """The buffer packed by ``layout``."""
    nograd: tuple[int, ...]
    lrs: list[float | None]
    """Host learning rates; None marks a tensor lr that travels in the buffer."""
    step_time: float | None
    phases: list[float]
    """Seconds of this step in each of ``wire.metrics.STEP_PHASES``."""
    memory: dict[str, float]
    """Memory counters read at the step (host-side, never a device sync): frames are built
    in batches later, and must still say what memory was at their own step."""
    recount: tuple[int, ...] = ()
    """Rows whose exact non-finite element counts end the buffer (flagged earlier)."""
    on_flags: Callable[[tuple[int, ...]], None] | None = None
    """Told (sender thread) which rows this frame flags with a non-finite norm."""

    def seal(self, logged: dict[str, Any], counters: CounterSnapshot | None = None) -> Outgoing:
        """Start the host copy of logged device tensors and of the running totals kept on a
        device (``counters``, exact in float64), and return the item for the sender.

        CPU tensors need no copy: the sender thread reads them (no device to wait for)."""
        tensors = [v for v in logged.values() if isinstance(v, Tensor) and not v.is_cpu]
        extra: HostCopy | None = None
        if tensors:
            extra = to_host(tensors)
        totals = list(counters.device.values()) if counters is not None else []
        exact = to_host(totals, torch.float64) if totals else None
        copies = (self.host, extra, exact)
        ready = [c.ready for c in copies if c is not None and c.ready is not None]
        slots = {id(t): i for i, t in enumerate(tensors)}

        def build(seq: int, dropped: int) -> wire.Frame:
            values = exact.values() if exact is not None else []
            more = counters.metrics(values) if counters is not None else {}
            return self._build(seq, dropped, logged, extra, slots, more)

        return Outgoing(build, ready)

    def _build(
        self,
        seq: int,
        dropped: int,
        logged: dict[str, Any],
        extra: HostCopy | None,
        slots: dict[int, int],
        counters: dict[str, float],
    ) -> wire.Stats:
        seg = self.layout.unpack(self.host.values())
        norms = seg.norms
        metrics: dict[str, float] = {
            m.GRAD_NORM: math.sqrt(math.fsum(x * x for x in norms)),
            m.NONFINITE_GRADS: float(sum(not math.isfinite(x) for x in norms)),
        }
        if seg.scaler:
            metrics[m.GRAD_SCALE], metrics[m.SCALER_SKIPPED] = seg.scaler
        tensor_lrs = iter(seg.lrs)
        lrs = tuple(next(tensor_lrs) if lr is None else lr for lr in self.lrs)
        if seg.percentiles:
            metrics.update(zip(_PERCENTILES, seg.percentiles, strict=True))
        counts = seg.counts
        nonfinite = tuple(
            (row, int(counts[2 * k]) * F32_EXACT + int(counts[2 * k + 1]))
            for k, row in enumerate(self.recount)
        )
        if self.on_flags is not None:
            self.on_flags(tuple(i for i, x in enumerate(norms) if not math.isfinite(x)))
        logged_values = extra.values() if extra is not None else []
        scalars = {k: _number(logged_values, v, slots) for k, v in logged.items() if k != m.LOSS}
        loss = _number(logged_values, logged[m.LOSS], slots) if m.LOSS in logged else None
        cfg = self.config
        metrics.update(
            throughput_metrics(
                self.step_time,
                scalars.get(m.TOKENS),
                scalars.get(m.SAMPLES),
                cfg.flops_per_token,
                cfg.peak_flops,
            )
        )
        metrics.update(zip(_PHASE_KEYS, self.phases, strict=True))
        metrics.update(self.memory)
        metrics.update(counters)
        metrics = {k: v for k, v in metrics.items() if not math.isnan(v) or k == m.GRAD_NORM}
        return wire.Stats(
            run=cfg.run,
            rank=cfg.rank,
            session=self.session,
            seq=seq,
            step=self.step,
            time=self.wall,
            loss=loss,
            lr=lrs,
            rows=wire.pack_floats(norms),
            full=wire.pack_floats(seg.full) if self.layout.full else b"",
            nograd=self.nograd,
            metrics=metrics,
            scalars=scalars,
            dropped=dropped,
            nonfinite=nonfinite,
        )
