"""``gradwatch runs [RUN]``: every run, or one run's ranks."""

from __future__ import annotations

import argparse
import time

from gradwatch.client import ApiError, Client, RunDetail, RunList
from gradwatch.collector.rank_ranges import compact_ranks
from gradwatch.collector.schemas import RunSummary
from gradwatch.wire.metrics import STEP_TIME, TOKENS_PER_SECOND

from .output import Cell, Table, age, number


def _status(run: RunSummary) -> str:
    if run.ended:
        return "ended"
    return "live" if any(r.live for r in run.ranks) else "stored"


def print_runs(runs: RunList, now: float) -> None:
    table = Table(("RUN", "STATUS", "RANKS", "STEP", "FIRING", "DROPPED", "LAST SEEN"))
    rows: list[list[Cell]] = [
        [
            (r.run, ""),
            (_status(r), "32" if _status(r) == "live" else "2"),
            (str(len(r.ranks)), ""),
            (str(max((k.last_step for k in r.ranks), default=0)), ""),
            (str(r.firing), "1;31" if r.firing else ""),
            (str(sum(k.dropped for k in r.ranks)), ""),
            (age(r.last_seen, now), ""),
        ]
        for r in runs.runs
    ]
    table.print(rows)


def print_stored_run(run: RunSummary, now: float) -> None:
    """A run only the database remembers: what each rank last sent."""
    table = Table(("RANK", "HOST", "STEP", "FRAMES", "DROPPED", "FIRING", "ENDED", "LAST SEEN"))
    table.print(
        [
            [
                (str(r.rank), ""),
                (r.host, ""),
                (str(r.last_step), ""),
                (str(r.frames), ""),
                (str(r.dropped), ""),
                (str(r.firing), "1;31" if r.firing else ""),
                ("yes" if r.ended else "no", ""),
                (age(r.last_seen, now), ""),
            ]  # fmt: skip
            for r in run.ranks
        ]
    )


STATUS_COLOURS = {"stalled": "1;31", "silent": "1;31", "crashed": "1;31", "terminated": "33"}


def _ranks(ranks: list[int]) -> str:
    return compact_ranks(ranks) or "-"


def print_run(detail: RunDetail) -> None:
    """A live run: per rank its latest step, loss, LR, speed, status and phase; the job (world
    size, ranks missing, stalled, crashed); then each rank's worst parameters."""
    table = Table(
        ("RANK", "HOST", "DEVICE", "OPTIMIZER", "STEP", "LOSS", "LR", "TOK/S", "STEP S",
         "STATUS", "PHASE")
    )  # fmt: skip
    table.print(
        [
            [
                (str(r.rank), ""),
                (r.host, ""),
                (r.device, ""),
                (r.optimizer, ""),
                (str(r.step), ""),
                (number(r.loss), ""),
                (",".join(number(x) for x in r.lr) or "-", ""),
                (number(r.metrics.get(TOKENS_PER_SECOND)), ""),
                (number(r.metrics.get(STEP_TIME)), ""),
                (r.status, STATUS_COLOURS.get(r.status, "")),
                (f"{r.phase} {age(0, r.phase_seconds)}" if r.phase else "-", ""),
            ]  # fmt: skip
            for r in detail.ranks
        ]
    )
    print(
        f"\nworld size {detail.world_size}: seen {_ranks(detail.seen)}, missing "
        f"{_ranks(detail.missing)}, live {_ranks(detail.live)}, stalled "
        f"{_ranks(detail.stalled)}, silent {_ranks(detail.silent)}, crashed "
        f"{_ranks(detail.crashed)}, terminated {_ranks(detail.terminated)}"
    )
    for r in detail.ranks:
        worst = r.worst
        parts = [
            "largest gradient norm: "
            + ", ".join(f"{p.name}={number(p.value)}" for p in worst.by_grad_norm),
            "smallest update ratio: "
            + ", ".join(f"{p.name}={number(p.value)}" for p in worst.lowest_update_ratio),
        ]
        if worst.non_finite:
            parts.append("non-finite: " + ", ".join(worst.non_finite))
        print(f"\nrank {r.rank}")
        for part in parts:
            if not part.endswith(": "):
                print("  " + part)


def runs(client: Client, args: argparse.Namespace) -> int:
    now = time.time()
    if args.name is None:
        listing = client.runs()
        if args.json:
            print(listing.model_dump_json())
        else:
            print_runs(listing, now)
        return 0
    try:
        detail = client.run(args.name)
    except ApiError as exc:  # not live: what the database remembers of it, if anything
        stored = next((r for r in client.runs().runs if r.run == args.name), None)
        if exc.status != 404 or stored is None:
            raise
        if args.json:
            print(stored.model_dump_json())
        else:
            print_stored_run(stored, now)
        return 0
    if args.json:
        print(detail.model_dump_json())
    else:
        print_run(detail)
    return 0
