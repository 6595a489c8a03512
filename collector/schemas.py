"""Response models of the HTTP API (they also document it in OpenAPI). The records themselves
(:class:`Alert`, :class:`RankSummary`) are served as they are, not written again here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .alert import Alert
from .run_record import RankSummary


class Problem(BaseModel):
    """Why a request failed (404, 401)."""

    detail: str


class AlertList(BaseModel):
    """A page of alerts, newest first."""

    alerts: list[Alert]
    total: int = Field(description="Alerts matching the filters, before paging")
    limit: int
    offset: int


class RunSummary(BaseModel):
    run: str
    ended: bool
    last_seen: float
    firing: int
    ranks: list[RankSummary]


class RunList(BaseModel):
    """A page of runs, most recently seen first."""

    runs: list[RunSummary]
    total: int = Field(description="Runs known (live or in the database), before paging")
    limit: int
    offset: int


class ParamValue(BaseModel):
    name: str
    value: float | None


class WorstParams(BaseModel):
    by_grad_norm: list[ParamValue] = Field(description="Top-k by gradient norm")
    lowest_update_ratio: list[ParamValue] = Field(description="Bottom-k by update ratio")
    non_finite: list[str] = Field(description="Parameters with a NaN/Inf gradient or weight")
    frozen_by_design: list[str] = Field(description="requires_grad=False: never alerted")


RankStatus = Literal["running", "stalled", "silent", "ended", "crashed", "terminated"]
RANK_STATUSES: tuple[str, ...] = ("running", "stalled", "silent", "ended", "crashed", "terminated")


class RankExit(BaseModel):
    """How a rank ended, from its ``bye``."""

    reason: str = Field(description="close, error or terminated")
    error_type: str = Field(description="The exception's type (error)")
    error_kind: str = Field(description="oom, distributed or exception (error)")
    error_message: str = Field(description="The exception's message, cut (error)")
    stack: list[str] = Field(description="Innermost frames first: the traceback, or where a "
                             "signal found the main thread")  # fmt: skip
    signal: int = Field(description="The signal number (terminated), else 0")


class RankDetail(BaseModel):
    rank: int
    host: str
    pid: int
    device: str
    optimizer: str
    world_size: int
    status: RankStatus = Field(
        description="running; stalled or silent (a rank_stalled or trainer_silent alert covers "
        "it); ended (closed), crashed or terminated (its bye)"
    )
    phase: str = Field(
        description="What the training thread does, from the latest heartbeat: init, data, "
        "forward, backward, optimizer, or a declared phase (eval, checkpoint); '' from older "
        "agents"
    )
    phase_seconds: float = Field(description="Seconds in that phase by now")
    declared: bool = Field(description="The phase was declared (monitor.phase)")
    stack: list[str] = Field(
        description="The training thread's stack, innermost first, while no step completes"
    )
    last_seen: float = Field(description="Collector time of its latest frame (unix seconds)")
    exit: RankExit | None = Field(description="How it ended, once it said bye")
    step: int
    loss: float | None
    lr: list[float | None]
    metrics: dict[str, float | None]
    scalars: dict[str, float | None]
    full_step: int = Field(description="Step of the latest update ratios (-1: none yet)")
    parameters: int
    worst: WorstParams


class RunDetail(BaseModel):
    """One run as a job: which ranks there should be, which are there, and how each is doing."""

    run: str
    ended: bool
    world_size: int = Field(description="The world size the hellos give")
    seen: list[int] = Field(description="Ranks that said hello")
    missing: list[int] = Field(description="Ranks below the world size that never said hello")
    live: list[int] = Field(description="Ranks that have not ended")
    stalled: list[int] = Field(description="Ranks a firing rank_stalled alert covers")
    silent: list[int] = Field(description="Ranks a firing trainer_silent alert covers")
    crashed: list[int] = Field(description="Ranks that ended with an error")
    terminated: list[int] = Field(description="Ranks that ended by a signal")
    ranks: list[RankDetail]


class Health(BaseModel):
    status: str
    ingest_alive: bool


class Ready(BaseModel):
    ready: bool
    zmq_bound: bool
    db_writable: bool = Field(description="The database takes writes (the last one succeeded)")
    problems: list[str] = Field(description="Why not ready, for a person (empty when ready)")
