"""Running totals kept over every optimizer step, sampled or not: the tokens and samples logged
and a histogram of step durations. Frames carry them cumulative since the process started, so
a step that is not sampled, or a frame that is dropped, loses nothing: the collector exports
them as Prometheus counters and a histogram.

Logged host numbers are added on the training thread. A logged tensor (``tokens=mask.sum()``)
is added on its device, out of place and without a sync; the sampled frames copy the running
sum to the host with the rest (float64: exact up to 2**53)."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gradwatch.wire import metrics as m

_TOTALS: dict[str, str] = {m.TOKENS: m.TOKENS_TOTAL, m.SAMPLES: m.SAMPLES_TOTAL}
"""Logged value -> the metric key of its running total."""
_BOUNDS = m.STEP_DURATION_BUCKETS
_BUCKET_KEYS = tuple(m.step_duration_le(b) for b in _BOUNDS)


@dataclass(frozen=True)
class CounterSnapshot:
    """The totals as they stood when a frame was sealed (training thread); turned into metric
    values on the sender thread."""

    host: Mapping[str, float]
    """Totals of logged numbers by metric key."""
    device: Mapping[str, Tensor]
    """Running sums of logged tensors by metric key (each immutable: sums are out of place)."""
    buckets: tuple[int, ...]
    """Steps per duration bucket (not cumulative; the last one is above every bound)."""
    seconds: float

    def metrics(self, device_values: Sequence[float]) -> dict[str, float]:
        """Metric values; ``device_values`` are the host values of ``device``, in order."""
        out = dict(self.host)
        for key, value in zip(self.device, device_values, strict=True):
            out[key] = out.get(key, 0.0) + value
        running = 0
        for key, n in zip(_BUCKET_KEYS, self.buckets, strict=False):
            running += n
            out[key] = float(running)
        out[m.STEP_DURATION_COUNT] = float(running + self.buckets[-1])
        out[m.STEP_DURATION_SUM] = self.seconds
        return out


class Counters:
    """The running totals, written by the training thread only."""

    def __init__(self) -> None:
        self.host: dict[str, float] = {}
        self.device: dict[str, Tensor] = {}
        self.buckets = [0] * (len(_BOUNDS) + 1)
        self.seconds = 0.0

    def observe_step(self, seconds: float) -> None:
        """One optimizer step took ``seconds`` (host wall time between step ends)."""
        self.buckets[bisect.bisect_left(_BOUNDS, seconds)] += 1
        self.seconds += seconds

    def add_logged(self, values: Mapping[str, Any]) -> None:
        """Add a step's logged ``tokens``/``samples`` (numbers or one-element tensors)."""
        for name, key in _TOTALS.items():
            v = values.get(name)
            if v is None:
                continue
            if isinstance(v, Tensor):
                v = v.detach().reshape(()).to(_exact_dtype(v.device))
                prev = self.device.get(key)
                self.device[key] = v if prev is None else prev + v
            else:
                self.host[key] = self.host.get(key, 0.0) + float(v)

    def snapshot(self) -> CounterSnapshot:
        """The totals now, for the frame being sealed."""
        host, device = dict(self.host), dict(self.device)
        return CounterSnapshot(host, device, tuple(self.buckets), self.seconds)


def _exact_dtype(device: torch.device) -> torch.dtype:
    """float64 (integers exact to 2**53), except on Apple's MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64
