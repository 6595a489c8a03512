"""What the HTTP API shows of runs, and its scrape: :class:`LocalViews` reads this process's
fleet (one collector process, or a ``--workers`` worker answering the main process);
``workers.RemoteViews`` asks the workers and merges their answers."""

from __future__ import annotations

from typing import Protocol

from .core import Core
from .runs import run_detail, run_list
from .schemas import RunDetail, RunList
from .series import RankHistory


class WorkerGone(RuntimeError):
    """A ``--workers`` worker did not answer in time (it died, or is stuck): the API says 503."""


class RunViews(Protocol):
    """The run-level answers of the API (the alerts are the main process's book's)."""

    def runs(self, limit: int, offset: int, sessions: bool) -> RunList: ...

    def run(self, name: str) -> RunDetail | None: ...

    def series(self, run: str, rank: int | None, wanted: list[str]) -> RankHistory | str:
        """The history, or why there is none (a 404's detail)."""
        ...

    def metrics(self) -> bytes: ...

    def problems(self) -> list[str]:
        """Why the collector is not ready (the core's reasons and its ingest's)."""
        ...

    def alive(self) -> bool:
        """Whether every ingest thread (and process) runs."""
        ...


class LocalViews:
    """The views of the runs this process holds."""

    def __init__(self, core: Core) -> None:
        self.core = core
        part = core.part
        self.judges = None if part is None else part.judges

    def runs(self, limit: int, offset: int, sessions: bool) -> RunList:
        c = self.core
        return run_list(
            c.fleet, c.book, c.store, limit=limit, offset=offset, sessions=sessions,
            judges=self.judges,
        )  # fmt: skip

    def run(self, name: str) -> RunDetail | None:
        return run_detail(self.core.fleet, self.core.book, name, self.core.config.topk)

    def series(self, run: str, rank: int | None, wanted: list[str]) -> RankHistory | str:
        live = self.core.fleet.runs.get(run)
        if live is None or not live.ranks:
            return f"no live run named {run!r}"
        rank = min(list(live.ranks)) if rank is None else rank
        if rank not in live.ranks:
            return f"run {run!r} has no live rank {rank}"
        history = self.core.series.read(run, rank, wanted)
        return history or RankHistory(run=run, rank=rank, last_step=-1, metrics={})

    def metrics(self) -> bytes:
        return self.core.registry.text()

    def problems(self) -> list[str]:
        return self.core.problems()

    def alive(self) -> bool:
        return True
