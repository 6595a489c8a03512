"""The vocabulary of ``Stats.metrics``: every frame-level metric key, written once.

The agent emits these keys, the collector's rules and exporter read them, and
docs/wire-protocol.md lists them; tests check all three against :data:`METRICS`.
"""

from __future__ import annotations

from .frames import PHASES

GRAD_NORM = "grad_norm"
NONFINITE_GRADS = "nonfinite_grads"
STEP_TIME = "step_time_seconds"
TOKENS_PER_SECOND = "tokens_per_second"
SAMPLES_PER_SECOND = "samples_per_second"
MFU = "mfu_ratio"
MEMORY_ALLOCATED = "memory_allocated_bytes"
MEMORY_RESERVED = "memory_reserved_bytes"
MEMORY_PEAK = "memory_peak_bytes"
MEMORY_TOTAL = "memory_total_bytes"
RSS = "rss_bytes"
OOMS = "oom_total"
ALLOC_RETRIES = "alloc_retries_total"
GRAD_SCALE = "grad_scale"
SCALER_SKIPPED = "scaler_skipped_total"
TOKENS_TOTAL = "tokens_total"
SAMPLES_TOTAL = "samples_total"
STEP_DURATION_COUNT = "step_duration_count"
STEP_DURATION_SUM = "step_duration_sum"
STEP_DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
)  # fmt: skip
"""Upper bounds (seconds) of the step-duration histogram the agent keeps over every step."""


def step_duration_le(bound: float) -> str:
    """The metric key of the step-duration bucket ``bound``: the number of steps so far that
    took at most ``bound`` seconds (``step_duration_le_0.5``)."""
    return f"step_duration_le_{bound:g}"


STEP_PHASES: tuple[str, ...] = PHASES[1:]
"""The phases timed in every step (all but ``init``)."""


def phase_seconds(phase: str) -> str:
    """The metric key of the time a step spent in ``phase`` (``phase_data_seconds``)."""
    return f"phase_{phase}_seconds"


_PHASE_MEANINGS = (
    "time from the end of the previous optimizer step to this step's first forward "
    "(data loading, host work)",
    "time in the watched model's forward passes",
    "time from the end of each forward to the next forward or the optimizer step (loss, "
    "backward, DDP all-reduce waits)",
    "time inside optimizer.step()",
)
GRAD_PERCENTILES: tuple[int, ...] = (1, 25, 50, 75, 95, 99)
"""Percentiles of the sampled |g| across parameters, sent on full steps."""


def grad_percentile(p: int) -> str:
    """The metric key of percentile ``p`` of the sampled |g| (``grad_p50``)."""
    return f"grad_p{p}"


METRICS: dict[str, str] = {
    GRAD_NORM: "global L2 norm over all tracked gradients",
    NONFINITE_GRADS: "number of tracked parameters whose gradient holds NaN/Inf",
    STEP_TIME: "wall time since the previous optimizer step",
    TOKENS_PER_SECOND: "tokens logged for the step / its wall time",
    SAMPLES_PER_SECOND: "samples logged for the step / its wall time",
    MFU: "model FLOPs utilisation, when flops per token and peak flops are given",
    MEMORY_ALLOCATED: "CUDA allocator: bytes allocated now",
    MEMORY_RESERVED: "CUDA allocator: bytes reserved now",
    MEMORY_PEAK: "CUDA allocator: peak bytes allocated",
    MEMORY_TOTAL: "memory the rank may use: the agent's memory_limit_bytes when set, else "
    "device capacity (CUDA) or physical RAM (CPU)",
    RSS: "process resident set size",
    OOMS: "CUDA allocator out-of-memory errors so far",
    ALLOC_RETRIES: "CUDA allocator cudaMalloc retries so far",
    GRAD_SCALE: "GradScaler scale, when a scaler is given",
    SCALER_SKIPPED: "optimizer steps the GradScaler skipped so far",
    TOKENS_TOTAL: "tokens logged so far by this process, every step included (a counter)",
    SAMPLES_TOTAL: "samples logged so far by this process, every step included (a counter)",
    STEP_DURATION_COUNT: "optimizer steps timed so far (every step after the first)",
    STEP_DURATION_SUM: "seconds of the optimizer steps timed so far",
    **{
        step_duration_le(b): f"optimizer steps so far that took at most {b:g} s"
        for b in STEP_DURATION_BUCKETS
    },
    **{phase_seconds(p): meaning for p, meaning in zip(STEP_PHASES, _PHASE_MEANINGS, strict=True)},
    **{
        grad_percentile(p): f"percentile {p} of the sampled absolute gradients (full steps)"
        for p in GRAD_PERCENTILES
    },
}
"""Every well-known key of ``Stats.metrics`` with what it means. An agent sends those it can
measure; user values from ``monitor.log(...)`` travel in ``Stats.scalars`` instead."""

# Names of ``monitor.log(...)`` values that gradwatch itself reads. ``loss`` travels in
# ``Stats.loss``, the others in ``Stats.scalars``.
LOSS = "loss"
TOKENS = "tokens"
"""Tokens trained in the step (for ``tokens_per_second`` and ``mfu_ratio``)."""
SAMPLES = "samples"
"""Samples trained in the step (for ``samples_per_second``)."""
VAL_LOSS = "val_loss"
"""A validation loss, logged with the step it was measured after."""
SUMMED: tuple[str, ...] = (TOKENS, SAMPLES)
"""Logged several times in one step, these add up (micro-batches); other names overwrite."""
