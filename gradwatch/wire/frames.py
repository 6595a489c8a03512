"""Wire protocol v1, the data: limits, column and metric names, and the frame types."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

VERSION = 1
MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Largest frame the collector accepts (also set as ZMQ_MAXMSGSIZE on its socket)."""
MAX_PARAMS = 200_000
MAX_NAME_LEN = 1024
MAX_MAP_LEN = 4096
MAX_GROUPS = 4096
"""Most optimizer param groups a frame describes (``Stats.lr``, ``Hello.groups``)."""
MAX_GROUP_NAME = 128

# Per-parameter columns. The hello names the columns actually sent, so both lists may grow.
CHEAP_FIELDS: tuple[str, ...] = ("grad_norm",)
"""Sent every sampled step, one row per tracked parameter (4 bytes a row)."""
FULL_FIELDS: tuple[str, ...] = (
    "update_norm",
    "update_ratio",
    "unchanged_frac",
    "underflow_frac",
    "grad_absmax",
    "grad_absmean",
    "weight_norm",
)
"""Sent every ``full_every`` steps (28 bytes a row): the sampled update snapshot, then the
per-parameter details that move slowly or only add colour to the gradient norm."""

Kind = Literal["hello", "stats", "heartbeat", "bye"]
KINDS: tuple[str, ...] = ("hello", "stats", "heartbeat", "bye")
REJECT_REASONS: tuple[str, ...] = (
    "malformed",
    "oversized",
    "version",
    "unknown_kind",
    "schema",
    "no_hello",
)
"""Reasons a frame is dropped; the collector counts each (``no_hello`` is decided there)."""

PHASES: tuple[str, ...] = ("init", "data", "forward", "backward", "optimizer")
"""What the training thread is doing, as the agent's hooks see it without a sync: ``init``
before the first forward, ``data`` from the end of an optimizer step to the next forward,
``forward`` inside the watched model's forward, ``backward`` from the end of a forward to the
next forward or optimizer step (loss, backward, DDP all-reduce waits), ``optimizer`` inside
``optimizer.step()``. A heartbeat may also carry a name declared by the user or an
integration (``eval``, ``checkpoint``), flagged ``declared``."""
BYE_REASONS: tuple[str, ...] = ("close", "error", "terminated")
"""Why a rank ended: closed normally, an uncaught exception, a signal (SIGTERM, SIGINT)."""
ERROR_KINDS: tuple[str, ...] = ("", "oom", "distributed", "exception")
"""Classes of the error in a ``bye`` with reason ``error`` ("" when there is none): ``oom``
(torch.OutOfMemoryError, CUDA or host out of memory), ``distributed`` (torch.distributed
errors, NCCL/gloo failures, collective timeouts), ``exception`` (anything else)."""
MAX_STACK = 20
"""Most frames in a stack (heartbeat of a stalled rank, bye of a crashed one), innermost first."""
MAX_STACK_ENTRY = 256
"""Longest stack entry, ``path/file.py:LINE in function``."""
MAX_PHASE_LEN = 64
MAX_ERROR_TYPE = 256
MAX_ERROR_MESSAGE = 1024
MAX_SIGNAL = 128


class WireError(ValueError):
    """A frame that cannot be accepted; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ParamInfo:
    """One row of the parameter table."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    requires_grad: bool
    group: int = 0
    """Index of the optimizer param group holding it (-1 when it is in none)."""


@dataclass(frozen=True)
class Hello:
    """Sent when the agent starts and again after every (re)connect."""

    run: str
    rank: int
    session: str
    world_size: int
    host: str
    pid: int
    torch: str
    device: str
    optimizer: str
    params: tuple[ParamInfo, ...]
    fields: tuple[str, ...] = CHEAP_FIELDS
    full_fields: tuple[str, ...] = FULL_FIELDS
    every: int = 1
    full_every: int = 50
    seq: int = 0
    time: float = 0.0
    replicated: bool = False
    """The model is replicated across ranks (DDP, or ``watch(..., replicated=True)``): per
    parameter gradient norms of a step, and weight norms on full steps, must agree."""
    sharded: tuple[int, ...] = ()
    """Indices into ``params`` of sharded parameters (FSDP flat params, DTensors, ZeRO),
    ascending; each rank holds a different part, so cross-rank comparison skips them."""
    device_uuid: str = ""
    """The CUDA device UUID (``GPU-...``, as nvidia-smi and DCGM name it); "" off CUDA."""
    groups: tuple[str, ...] = ()
    """The optimizer's param groups' ``name`` entries, in order ("" for an unnamed group);
    empty when no group is named (and from older agents)."""

    @cached_property
    def tracked(self) -> tuple[int, ...]:
        """Indices into ``params`` of the rows that stats frames carry (requires_grad ones;
        derived once per hello)."""
        return tuple(i for i, p in enumerate(self.params) if p.requires_grad)


@dataclass(frozen=True)
class Stats:
    """One sampled training step.

    ``rows`` holds ``len(tracked) * len(fields)`` float32 values; ``full`` likewise for
    ``full_fields`` on full steps and is empty otherwise. ``nograd`` lists tracked-row indices
    whose gradient was missing this step. ``metrics`` holds agent-computed scalars (see
    docs/wire-protocol.md for the well-known names), ``scalars`` whatever the user logged.
    ``nonfinite`` holds ``(row, count)``: exact numbers of NaN/Inf gradient elements at this
    step, for parameters that an earlier frame flagged with a non-finite norm.
    """

    run: str
    rank: int
    session: str
    seq: int
    step: int
    time: float
    loss: float | None
    lr: tuple[float, ...]
    rows: bytes
    full: bytes = b""
    nograd: tuple[int, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    scalars: Mapping[str, float] = field(default_factory=dict)
    dropped: int = 0
    nonfinite: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Heartbeat:
    """Proof of life, sent by the agent's sender thread every ``heartbeat_seconds`` whatever
    the training thread does; says what that thread is doing and, when no step has completed
    for ``stall_seconds``, where it is stuck."""

    run: str
    rank: int
    session: str
    seq: int
    step: int
    """The last completed optimizer step."""
    time: float
    dropped: int = 0
    phase: str = ""
    """One of :data:`PHASES`, or a declared name when ``declared``; "" from older agents."""
    phase_seconds: float = 0.0
    """Seconds the training thread has been in ``phase``."""
    declared: bool = False
    """``phase`` was declared by ``monitor.phase(...)`` or an integration."""
    stack: tuple[str, ...] = ()
    """The training thread's Python stack when stalled (innermost first, at most
    :data:`MAX_STACK` entries ``path/file.py:LINE in function``); empty otherwise."""


@dataclass(frozen=True)
class Bye:
    """The run ended on this rank; ``reason`` is one of :data:`BYE_REASONS`."""

    run: str
    rank: int
    session: str
    seq: int
    step: int
    time: float
    reason: str = "close"
    dropped: int = 0
    error_type: str = ""
    """The exception's type, ``module.Name`` (``ValueError``, ``torch.OutOfMemoryError``)."""
    error_kind: str = ""
    """One of :data:`ERROR_KINDS`; "" without an error."""
    error_message: str = ""
    """The exception's message, at most :data:`MAX_ERROR_MESSAGE` characters."""
    stack: tuple[str, ...] = ()
    """``error``: the innermost frames of the traceback, innermost first; ``terminated``:
    where the main thread was when the signal arrived. Entries as in ``Heartbeat.stack``."""
    signal: int = 0
    """The signal number for ``terminated`` (15: SIGTERM, 2: SIGINT), else 0."""


Frame = Hello | Stats | Heartbeat | Bye


def pack_floats(values: Sequence[float] | array[float]) -> bytes:
    """Little-endian float32 bytes of ``values``."""
    arr = values if isinstance(values, array) and values.typecode == "f" else array("f", values)
    if sys.byteorder == "big":
        arr = array("f", arr)
        arr.byteswap()
    return arr.tobytes()


def unpack_floats(data: bytes) -> array[float]:
    """Inverse of :func:`pack_floats`."""
    arr = array("f")
    arr.frombytes(data)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr


def unpack_columns(fields: Sequence[str], data: bytes) -> dict[str, list[float]]:
    """The per-parameter columns of a packed row block whose rows hold ``fields``."""
    values = unpack_floats(data)
    return {f: values[j :: len(fields)].tolist() for j, f in enumerate(fields)}
