"""The persisted view of one rank of one run: what ``/runs`` shows after a restart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ConfigDict

if TYPE_CHECKING:
    from .state import RankState


@dataclass(frozen=True)
class RunRecord:
    """One rank of one run as the store keeps it."""

    __pydantic_config__ = ConfigDict(use_attribute_docstrings=True)  # the API's schema

    run: str
    rank: int
    host: str
    session: str
    """The agent process's session id (empty in ``GET /runs`` unless the caller presented the
    API token: with it, frames could be forged for this rank)."""
    first_seen: float
    """Collector time of the rank's first frame (unix seconds)."""
    last_seen: float
    """Collector time of its latest frame."""
    last_step: int
    ended: bool
    """The rank said bye."""
    frames: int
    """Frames received from it."""
    dropped: int
    """Frames the agent reports it could not send."""

    @classmethod
    def of(cls, s: RankState) -> RunRecord:
        """The persisted view of a live rank."""
        return cls(
            s.run, s.rank, s.hello.host, s.hello.session, s.first_seen, s.last_seen,
            s.last_step, s.ended, s.frames, s.dropped,
        )  # fmt: skip


@dataclass(frozen=True)
class RankSummary(RunRecord):
    """A rank in ``GET /runs``: the stored record plus what only the live collector knows."""

    firing: int = 0
    """Firing alerts on this rank."""
    live: bool = False
    """Held in memory (false: only known from the database)."""
