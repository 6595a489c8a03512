"""The layout of one step's buffer, declared once: the training thread packs a step's device
results by it (optimizer post-hook) and the sender thread unpacks the host copy by it.

The field order of :class:`Segments` is the buffer order; :class:`StepLayout` says how many
floats each segment holds for one step, so neither side counts positions by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Generic, TypeVar

from torch import Tensor

from gradwatch import wire

T = TypeVar("T")


@dataclass(frozen=True)
class Segments(Generic[T]):
    """One step's buffer, segment by segment; this field order is the buffer order."""

    norms: T
    """Gradient L2 norm of each tracked parameter (``n`` floats)."""
    scaler: T
    """``grad_scale`` and ``scaler_skipped_total`` (2 floats with an enabled GradScaler)."""
    lrs: T
    """The learning rates that are tensors, in param-group order (1 float each)."""
    full: T
    """Full rows, ``n x len(wire.FULL_FIELDS)`` row-major (full steps only)."""
    percentiles: T
    """Percentiles of the sampled |g|, in ``wire.metrics.GRAD_PERCENTILES`` order (full steps)."""
    counts: T
    """Exact NaN/Inf element counts of the recounted rows as ``(high, low)`` pairs, base 2**24."""


SEGMENTS: tuple[str, ...] = tuple(f.name for f in fields(Segments))


@dataclass(frozen=True)
class StepLayout:
    """How many floats each segment of one step's buffer holds."""

    n: int
    """Tracked parameters."""
    scaler: int = 0
    """0, or 2 with an enabled GradScaler."""
    lrs: int = 0
    """Learning rates that are tensors (they travel in the buffer, the others on the host)."""
    full: bool = False
    """A full step: full rows and percentiles are present."""
    recount: int = 0
    """Rows whose non-finite elements are counted exactly."""

    def sizes(self) -> Segments[int]:
        return Segments(
            norms=self.n,
            scaler=self.scaler,
            lrs=self.lrs,
            full=self.n * len(wire.FULL_FIELDS) if self.full else 0,
            percentiles=len(wire.metrics.GRAD_PERCENTILES) if self.full else 0,
            counts=2 * self.recount,
        )

    @staticmethod
    def pack(parts: Segments[list[Tensor]]) -> list[Tensor]:
        """The tensors to copy to the host, in buffer order (training thread; no device work)."""
        return [t for name in SEGMENTS for t in getattr(parts, name)]

    def unpack(self, values: Sequence[float]) -> Segments[Sequence[float]]:
        """Split the flattened host copy into its segments (sender thread)."""
        sizes = self.sizes()
        out: dict[str, Sequence[float]] = {}
        pos = 0
        for name in SEGMENTS:
            size: int = getattr(sizes, name)
            out[name] = values[pos : pos + size]
            pos += size
        if pos != len(values):
            raise ValueError(f"step buffer holds {len(values)} floats, the layout {pos}: {self}")
        return Segments(**out)
