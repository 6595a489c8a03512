"""Response models of the HTTP API (they also document it in OpenAPI). The records themselves
(:class:`Alert`, :class:`RankSummary`) are served as they are, not written again here."""

from __future__ import annotations

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
    db_writable: bool = Field(description="The database takes writes (the last one succeeded)")
    problems: list[str] = Field(description="Why not ready, for a person (empty when ready)")
