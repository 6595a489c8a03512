"""System metrics: memory (host-side counters, read at the step; no device sync), throughput, MFU,
and GradScaler state tracked on the device."""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch
from torch import Tensor

from gradwatch.wire import metrics as m

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@functools.cache
def physical_memory_bytes() -> float:
    """Physical RAM of this machine, or NaN when unknown."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.nan


class _Statm:
    """``/proc/self/statm`` kept open and re-read with ``pread``: opening it costs ~150 us
    inside a training step (path walk, cold caches), a read of the open file ~5 us."""

    def __init__(self) -> None:
        self.fd = -1
        self.pid = -1

    def rss_bytes(self) -> float:
        pid = os.getpid()
        if self.pid != pid:  # first use, or a forked child holding its parent's file
            if self.fd >= 0:
                os.close(self.fd)
            self.fd, self.pid = os.open("/proc/self/statm", os.O_RDONLY), pid
        return float(int(os.pread(self.fd, 128, 0).split()[1]) * _PAGE)


_STATM = _Statm()


def memory_metrics(device: torch.device, limit: float | None = None) -> dict[str, float]:
    """Allocator counters (CUDA) or resident set size (CPU); never synchronises the device.
    ``memory_total_bytes`` is ``limit`` when given, else the device's or the host's capacity."""
    out: dict[str, float] = {}
    if device.type == "cuda":
        stats = torch.cuda.memory_stats(device)
        out[m.MEMORY_ALLOCATED] = float(stats.get("allocated_bytes.all.current", 0))
        out[m.MEMORY_RESERVED] = float(stats.get("reserved_bytes.all.current", 0))
        out[m.MEMORY_PEAK] = float(stats.get("allocated_bytes.all.peak", 0))
        out[m.OOMS] = float(stats.get("num_ooms", 0))
        out[m.ALLOC_RETRIES] = float(stats.get("num_alloc_retries", 0))
        out[m.MEMORY_TOTAL] = _cuda_total_bytes(device.index)
    else:
        try:
            out[m.RSS] = _STATM.rss_bytes()
        except (OSError, ValueError, IndexError):
            import resource

            out[m.RSS] = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        out[m.MEMORY_TOTAL] = physical_memory_bytes()
    if limit is not None:
        out[m.MEMORY_TOTAL] = float(limit)
    return out


@functools.cache
def _cuda_total_bytes(index: int | None) -> float:
    return float(torch.cuda.get_device_properties(index).total_memory)


def throughput_metrics(
    step_time: float | None,
    tokens: float | None,
    samples: float | None,
    flops_per_token: float | None,
    peak_flops: float | None,
) -> dict[str, float]:
    """Rates from one step's wall time and what the user logged for it."""
    out: dict[str, float] = {}
    if step_time is None or step_time <= 0:
        return out
    out[m.STEP_TIME] = step_time
    if tokens is not None:
        out[m.TOKENS_PER_SECOND] = tokens / step_time
        if flops_per_token and peak_flops:
            out[m.MFU] = tokens / step_time * flops_per_token / peak_flops
    if samples is not None:
        out[m.SAMPLES_PER_SECOND] = samples / step_time
    return out


class ScalerTracker:
    """Counts GradScaler-skipped steps on the device, without reading anything back.

    A skipped step never calls ``optimizer.step()`` (so no hook sees it) but halves the scale
    (``backoff_factor``). Between two of our post-hooks the scale therefore moved by
    ``growth^g * backoff^k`` with ``g`` in {0, 1} known from the growth tracker, so ``k``, the
    skipped steps, follows from the two scales in log space.
    """

    def __init__(self, scaler: Any) -> None:
        self.scaler = scaler
        self.prev_scale: Tensor | None = None
        self.prev_tracker: Tensor | None = None
        self.skipped: Tensor | None = None

    def compute(self) -> list[Tensor]:
        """Return ``[grad_scale, scaler_skipped_total]`` as device tensors (post-hook)."""
        s = self.scaler
        scale = getattr(s, "_scale", None)
        if scale is None or not s.is_enabled():
            return []
        scale = scale.detach().to(torch.float32).reshape(1)
        tracker = s._growth_tracker.detach().to(torch.float32).reshape(1)
        if self.skipped is None or self.prev_scale is None or self.prev_tracker is None:
            init = torch.full_like(scale, float(s._init_scale))
            steps = torch.log(init / scale) / -math.log(s._backoff_factor)
            self.skipped = steps.round().clamp_min(0)
        else:
            grew = (self.prev_tracker + 1 >= s._growth_interval).to(torch.float32)
            expected = self.prev_scale * torch.pow(float(s._growth_factor), grew)
            steps = torch.log(expected / scale) / -math.log(s._backoff_factor)
            self.skipped = self.skipped + steps.round().clamp_min(0)
        self.prev_scale, self.prev_tracker = scale.clone(), tracker.clone()
        return [self.prev_scale, self.skipped]  # copies: the scaler updates its own in place
