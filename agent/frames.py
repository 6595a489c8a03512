"""Turning device buffers into wire frames: the async host copy (training thread) and the
unpacking into :class:`wire.Stats` (sender thread)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gradwatch import wire
from gradwatch.agent.config import AgentConfig
from gradwatch.agent.stats import NCOLS
from gradwatch.agent.system import throughput_metrics
from gradwatch.agent.transport import Outgoing
from gradwatch.agent.updates import QUANTILES

_PCT_NAMES = tuple(f"grad_p{round(q * 100)}" for q in QUANTILES)


@dataclass
class HostCopy:
    """A host tensor being filled from the device, and how to wait for it."""

    tensor: Tensor
    wait: Callable[[], Any] | None = None


def to_host(buf: Tensor) -> HostCopy:
    """Start copying ``buf`` to the host without blocking (pinned + event on CUDA)."""
    if buf.device.type == "cuda":
        host = torch.empty(buf.shape, dtype=buf.dtype, pin_memory=True)
        host.copy_(buf, non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record()
        return HostCopy(host, event.synchronize)
    if buf.device.type == "cpu":
        return HostCopy(buf)
    return HostCopy(buf.to("cpu", non_blocking=True))  # other backends: best effort


def _number(values: list[float], v: Any, slots: dict[int, int]) -> float:
    return values[slots[id(v)]] if isinstance(v, Tensor) else float(v)


@dataclass
class PendingStats:
    """One sampled step whose frame is still open for ``log()`` values."""

    config: AgentConfig
    session: str
    step: int
    wall: float
    n: int
    host: HostCopy
    nograd: tuple[int, ...]
    n_scaler: int
    lrs: list[float | None]
    """Host learning rates; None marks a tensor lr that travels in the buffer."""
    full: bool
    step_time: float | None
    memory: dict[str, float]
    """Memory counters read at the step (host-side, never a device sync): frames are built
    in batches later, and must still say what memory was at their own step."""

    def seal(self, logged: dict[str, Any]) -> Outgoing:
        """Copy the logged tensors to the host too and return the item for the sender."""
        tensors = [v for v in logged.values() if isinstance(v, Tensor)]
        extra: HostCopy | None = None
        if tensors:
            stacked = torch.stack(
                [t.reshape(()).to(tensors[0].device, torch.float32) for t in tensors]
            )
            extra = to_host(stacked)
        waits = [w for w in (self.host.wait, extra.wait if extra else None) if w is not None]
        slots = {id(t): i for i, t in enumerate(tensors)}

        def build(seq: int, dropped: int) -> wire.Frame:
            return self._build(seq, dropped, logged, extra, slots)

        return Outgoing(build, waits)

    def _build(
        self,
        seq: int,
        dropped: int,
        logged: dict[str, Any],
        extra: HostCopy | None,
        slots: dict[int, int],
    ) -> wire.Stats:
        flat = self.host.tensor
        n4 = self.n * NCOLS
        rows = flat[:n4].numpy().tobytes()
        rest: list[float] = flat[n4:].tolist()
        metrics: dict[str, float] = {"grad_norm": rest[0], "nonfinite_grads": rest[1]}
        pos = 2
        if self.n_scaler:
            metrics["grad_scale"], metrics["scaler_skipped_total"] = rest[pos], rest[pos + 1]
            pos += self.n_scaler
        lrs: list[float] = []
        for lr in self.lrs:
            if lr is None:
                lrs.append(rest[pos])
                pos += 1
            else:
                lrs.append(lr)
        full = b""
        if self.full:
            full = flat[n4 + pos : n4 + pos + n4].numpy().tobytes()
            pos += n4
            metrics.update(zip(_PCT_NAMES, rest[pos : pos + len(_PCT_NAMES)], strict=True))
        values: list[float] = extra.tensor.tolist() if extra is not None else []
        scalars = {k: _number(values, v, slots) for k, v in logged.items() if k != "loss"}
        loss = _number(values, logged["loss"], slots) if "loss" in logged else None
        cfg = self.config
        metrics.update(
            throughput_metrics(
                self.step_time,
                scalars.get("tokens"),
                scalars.get("samples"),
                cfg.flops_per_token,
                cfg.peak_flops,
            )
        )
        metrics.update(self.memory)
        metrics = {k: v for k, v in metrics.items() if not math.isnan(v) or k == "grad_norm"}
        return wire.Stats(
            run=cfg.run,
            rank=cfg.rank,
            session=self.session,
            seq=seq,
            step=self.step,
            time=self.wall,
            loss=loss,
            lr=tuple(lrs),
            rows=rows,
            full=full,
            nograd=self.nograd,
            metrics=metrics,
            scalars=scalars,
            dropped=dropped,
        )


def heartbeat_item(run: str, rank: int, session: str, step: int) -> Outgoing:
    """A heartbeat for a step that is not sampled (built from the training thread's path)."""
    now = time.time()

    def build(seq: int, dropped: int) -> wire.Frame:
        return wire.Heartbeat(run, rank, session, seq, step, now, dropped)

    return Outgoing(build)
