"""Views of runs for the API: the live fleet merged with what the database remembers."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

from .book import AlertBook
from .fleet import Fleet
from .params import Floats
from .ranking import worst
from .run_record import RankSummary, RunRecord
from .schemas import (
    ParamValue,
    RankDetail,
    RankExit,
    RankStatus,
    RunDetail,
    RunList,
    RunSummary,
    WorstParams,
)
from .state import RankState
from .store import Store, StoreError


def run_list(
    fleet: Fleet,
    book: AlertBook,
    store: Store | None,
    *,
    limit: int = 100,
    offset: int = 0,
    sessions: bool = False,
    judges: Callable[[str], bool] | None = None,
) -> RunList:
    """One page of the runs live in memory or remembered in the database, most recently seen
    first. Costs O(runs + open alerts): only the page's runs are read from the database and
    built. Session ids are blanked unless ``sessions`` (the caller presented the API token).
    ``judges``: only the database's runs it accepts (a ``--workers`` worker's)."""
    seen: dict[str, float] = {}
    if store is not None:
        try:
            seen = store.run_index()
        except StoreError:  # a broken database: show what is live
            seen = {}
    if judges is not None:
        seen = {name: t for name, t in seen.items() if judges(name)}
    live = {run.name: run for run in list(fleet.runs.values())}
    for name, run in live.items():
        seen[name] = max(seen.get(name, 0.0), run.last_seen)
    order = sorted(seen, key=lambda name: (seen[name], name), reverse=True)
    page = order[offset : offset + limit]
    ranks: dict[str, dict[int, RankSummary]] = {name: {} for name in page}
    stored: list[RunRecord] = []
    if store is not None:
        try:
            stored = store.load_runs(page)
        except StoreError:
            stored = []
    current = [
        RunRecord.of(s) for name in page if name in live for s in list(live[name].ranks.values())
    ]
    firing = book.firing_at({(r.run, r.rank) for r in stored + current})
    for record, is_live in [(r, False) for r in stored] + [(r, True) for r in current]:
        summary = RankSummary(**vars(record), firing=firing[record.run, record.rank], live=is_live)
        if not sessions:
            summary = dataclasses.replace(summary, session="")
        ranks[record.run][record.rank] = summary
    runs = [
        RunSummary(
            run=name,
            ended=all(r.ended for r in by_rank.values()),
            last_seen=max(r.last_seen for r in by_rank.values()),
            firing=sum(r.firing for r in by_rank.values()),
            ranks=sorted(by_rank.values(), key=lambda r: r.rank),
        )
        for name, by_rank in ranks.items()
        if by_rank
    ]
    return RunList(runs=runs, total=len(order), limit=limit, offset=offset)


def _top(names: tuple[str, ...], values: list[float], k: int, highest: bool) -> list[ParamValue]:
    pairs = worst(names, values, k, highest=highest)
    return [ParamValue(name=n, value=v) for n, v in pairs]


def _status(s: RankState, stalled: set[int], silent: set[int]) -> RankStatus:
    reason = "" if s.bye is None else s.bye.reason
    if reason in ("error", "terminated"):
        return "crashed" if reason == "error" else "terminated"
    if s.ended:
        return "ended"
    return "silent" if s.rank in silent else "stalled" if s.rank in stalled else "running"


def _exit(s: RankState) -> RankExit | None:
    bye = s.bye
    if bye is None:
        return None
    return RankExit(
        reason=bye.reason, error_type=bye.error_type, error_kind=bye.error_kind,
        error_message=bye.error_message, stack=list(bye.stack), signal=bye.signal,
    )  # fmt: skip


def rank_detail(
    s: RankState, topk: int, status: RankStatus = "running", now: float | None = None
) -> RankDetail:
    stats = s.stats
    grads = _listed(s.latest("grad_norm"))
    weights = _listed(s.latest("weight_norm"))
    bad = {
        s.names[i]
        for column in (grads, weights)
        for i, x in enumerate(column)
        if not math.isfinite(x) and i < len(s.names)
    }
    worst = WorstParams(
        by_grad_norm=_top(s.names, grads, topk, highest=True),
        lowest_update_ratio=_top(
            s.names, _listed(s.full_columns.get("update_ratio")), topk, highest=False
        ),
        non_finite=[n for n in s.names if n in bad],
        frozen_by_design=list(s.frozen_by_design),
    )
    now = time.time() if now is None else now
    return RankDetail(
        rank=s.rank,
        host=s.hello.host,
        pid=s.hello.pid,
        device=s.hello.device,
        optimizer=s.hello.optimizer,
        world_size=s.hello.world_size,
        status=status,
        phase=s.phase,
        phase_seconds=s.in_phase(now) if s.phase and not s.ended else s.phase_seconds,
        declared=s.declared,
        stack=list(s.stack),
        last_seen=s.last_seen,
        exit=_exit(s),
        step=s.last_step,
        loss=None if stats is None else stats.loss,
        lr=[] if stats is None else list(stats.lr),
        metrics={} if stats is None else {k: v for k, v in stats.metrics.items()},
        scalars={} if stats is None else {k: v for k, v in stats.scalars.items()},
        full_step=s.full_step,
        parameters=len(s.names),
        worst=worst,
    )


def _covered(book: AlertBook, run: str, rule: str) -> set[int]:
    return {r for a in book.alerts("firing", run=run, rule=rule) for r in a.covers}


def run_detail(fleet: Fleet, book: AlertBook, name: str, topk: int) -> RunDetail | None:
    """The job view of a live run: world size, ranks seen, missing, live, stalled, silent,
    crashed and terminated, and each rank's status, phase and latest statistics."""
    run = fleet.runs.get(name)
    if run is None:
        return None
    now = time.time()
    stalled, silent = _covered(book, name, "rank_stalled"), _covered(book, name, "trainer_silent")
    states = sorted(list(run.ranks.values()), key=lambda r: r.rank)
    ranks = [rank_detail(s, topk, _status(s, stalled, silent), now) for s in states]
    size = run.world_size
    seen = [s.rank for s in states]

    def having(*statuses: str) -> list[int]:
        return [r.rank for r in ranks if r.status in statuses]

    return RunDetail(
        run=name, ended=run.ended, world_size=size, seen=seen,
        missing=[r for r in range(size) if r not in run.ranks],
        live=[s.rank for s in states if not s.ended], stalled=having("stalled"),
        silent=having("silent"), crashed=having("crashed"), terminated=having("terminated"),
        ranks=ranks,
    )  # fmt: skip


def _listed(column: Floats | None) -> list[float]:
    return [] if column is None else column.tolist()
