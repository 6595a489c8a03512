"""Response models of the HTTP API (they also document it in OpenAPI)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class AlertOut(BaseModel):
    """One alert."""

    id: int
    rule: str = Field(description="Canonical rule name, see docs/rules.md")
    severity: str = Field(description="info, warning, error or critical")
    state: str = Field(description="pending, firing or resolved")
    run: str
    rank: int
    step: int = Field(description="Training step at which the condition was last seen")
    first_step: int = Field(description="Training step at which the condition was first seen")
    parameter: str | None = Field(description="Offending parameter, when the rule names one")
    value: float | None = Field(description="Observed value (null when not finite)")
    threshold: float | None
    message: str
    action: str = Field(description="What to do about it")
    started_at: float = Field(description="Unix seconds")
    updated_at: float
    resolved_at: float | None
    acked: bool
    history: list[tuple[int, float | None]] = Field(
        description="Flight recorder: recent (step, value) pairs that led to the alert"
    )


class AlertList(BaseModel):
    """A page of alerts, newest first."""

    alerts: list[AlertOut]
    total: int = Field(description="Alerts matching the filters, before paging")
    limit: int
    offset: int


class RankSummary(BaseModel):
    """A :class:`~gradwatch.collector.run_record.RunRecord` (its ``run`` is the parent's) plus
    ``firing`` and ``live``; a test keeps the fields equal."""

    rank: int
    host: str
    session: str
    first_seen: float
    last_seen: float
    last_step: int
    ended: bool
    frames: int
    dropped: int = Field(description="Frames the agent reports it could not send")
    firing: int = Field(description="Firing alerts on this rank")
    live: bool = Field(description="Held in memory (false: only known from the database)")


class RunSummary(BaseModel):
    run: str
    ended: bool
    last_seen: float
    firing: int
    ranks: list[RankSummary]


class RunList(BaseModel):
    runs: list[RunSummary]


class ParamValue(BaseModel):
    name: str
    value: float | None


class WorstParams(BaseModel):
    by_grad_norm: list[ParamValue] = Field(description="Top-k by gradient norm")
    lowest_update_ratio: list[ParamValue] = Field(description="Bottom-k by update ratio")
    non_finite: list[str] = Field(description="Parameters with a NaN/Inf gradient or weight")
    frozen_by_design: list[str] = Field(description="requires_grad=False: never alerted")


class RankDetail(BaseModel):
    rank: int
    host: str
    device: str
    optimizer: str
    world_size: int
    step: int
    loss: float | None
    lr: list[float | None]
    metrics: dict[str, float | None]
    scalars: dict[str, float | None]
    full_step: int = Field(description="Step of the latest update ratios (-1: none yet)")
    parameters: int
    worst: WorstParams


class RunDetail(BaseModel):
    run: str
    ended: bool
    ranks: list[RankDetail]


class Health(BaseModel):
    status: str
    ingest_alive: bool


class Ready(BaseModel):
    ready: bool
    zmq_bound: bool
    db_writable: bool
