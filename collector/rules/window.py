"""Moving windows with running sums: the mean and standard deviation of the latest values in
O(1) per value instead of a pass over the window on every frame."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator

from .base import mean_std

SAFE = 1e150
"""Beyond this magnitude a square may overflow: the window answers exactly (``mean_std``)."""


class Window:
    """The latest ``size`` values, their running sum and sum of squares.

    The sums are recomputed exactly (``math.fsum``) every ``size`` values so rounding cannot
    drift; while the window holds a value beyond :data:`SAFE` (or a non-finite one) every
    answer comes from :func:`mean_std` over the values, as before."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: deque[float] = deque()
        self._sum = 0.0
        self._squares = 0.0
        self._unsafe = 0
        """Values in the window beyond SAFE or not finite."""
        self._fresh = 0
        """Values added since the sums were last recomputed."""

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[float]:
        return iter(self.values)

    def append(self, x: float) -> float | None:
        """Add ``x``; return the value that left the window, if one did."""
        out = None
        if len(self.values) >= self.size:
            out = self.values.popleft()
            if abs(out) <= SAFE:
                self._sum -= out
                self._squares -= out * out
            else:
                self._unsafe -= 1
        self.values.append(x)
        if abs(x) <= SAFE:
            self._sum += x
            self._squares += x * x
        else:
            self._unsafe += 1
        self._fresh += 1
        if self._fresh >= self.size or (out is not None and not abs(out) <= SAFE):
            self._resum()
        return out

    def _resum(self) -> None:
        safe = [v for v in self.values if abs(v) <= SAFE]
        self._sum = math.fsum(safe)
        self._squares = math.fsum(v * v for v in safe)
        self._unsafe = len(self.values) - len(safe)
        self._fresh = 0

    def mean(self) -> float:
        if self._unsafe or not self.values:
            return mean_std(list(self.values))[0]
        return self._sum / len(self.values)

    def mean_std(self) -> tuple[float, float]:
        """Mean and population standard deviation (as :func:`mean_std` computes them)."""
        n = len(self.values)
        if self._unsafe or not n:
            return mean_std(list(self.values))
        mean = self._sum / n
        return mean, math.sqrt(max(0.0, self._squares / n - mean * mean))
