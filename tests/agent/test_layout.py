"""The step buffer's layout: what the post-hook packs is what the sender thread unpacks."""

from __future__ import annotations

import pytest
import torch

from gradwatch import wire
from gradwatch.agent.layout import SEGMENTS, Segments, StepLayout


def _parts(layout: StepLayout) -> Segments[list[torch.Tensor]]:
    """Each segment filled with its own marker value (segment index * 100 + position)."""
    sizes = layout.sizes()
    return Segments(
        **{
            name: [torch.arange(getattr(sizes, name), dtype=torch.float32) + 100 * i]
            for i, name in enumerate(SEGMENTS)
        }
    )


@pytest.mark.parametrize(
    "layout",
    [
        StepLayout(n=3),
        StepLayout(n=3, scaler=2, lrs=2, full=True, recount=2),
        StepLayout(n=0, lrs=1, full=True),
    ],
)
def test_layout_unpack_returns_each_packed_segment(layout: StepLayout) -> None:
    packed = StepLayout.pack(_parts(layout))
    values = torch.cat([t.reshape(-1) for t in packed]).tolist()
    seg = layout.unpack(values)
    sizes = layout.sizes()
    for i, name in enumerate(SEGMENTS):
        assert list(getattr(seg, name)) == [100 * i + k for k in range(getattr(sizes, name))]


def test_layout_sizes_follow_the_wire_columns_and_percentiles() -> None:
    sizes = StepLayout(n=5, scaler=2, lrs=1, full=True, recount=3).sizes()
    assert sizes.full == 5 * len(wire.FULL_FIELDS)
    assert sizes.percentiles == len(wire.metrics.GRAD_PERCENTILES)
    assert sizes.counts == 6
    assert StepLayout(n=5).sizes().full == 0


def test_layout_unpack_rejects_a_buffer_of_another_length() -> None:
    with pytest.raises(ValueError, match="holds 4 floats"):
        StepLayout(n=3, lrs=2).unpack([1.0, 2.0, 3.0, 4.0])
