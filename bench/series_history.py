"""The page's per-rank history (collector/series.py): memory per rank and ingest cost per frame.

Memory: what one rank's history holds after N stats frames (six metrics, as the demo trainer
sends on CPU; tracemalloc, allocations made by series.py), beside the baseline of keeping every
sample in arrays, measured in the same run.
Cost: a frame's whole ingest (decode, fleet, every rule) with and without the history's one
call, interleaved in blocks so machine noise hits both alike.
Run: .venv/bin/python bench/series_history.py [--frames N]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable
from pathlib import Path

from gradwatch import wire
from gradwatch.collector import series
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import build_core
from gradwatch.collector.fleet import Fleet
from gradwatch.collector.series import SeriesStore, values_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers, from a checkout
from tests.helpers.fake_rank import FakeRank  # noqa: E402

METRICS = {"grad_norm": 1.0, "tokens_per_second": 4000.0, "rss_bytes": 4e8}


def frames(rank: FakeRank, n: int, start: int = 1) -> list[wire.Stats]:
    return [
        rank.stats(s, loss=2 + math.sin(s / 50), lr=(1e-3,), metrics=METRICS)
        for s in range(start, start + n)
    ]


def _feed(n: int, take: Callable[[wire.Stats], None]) -> None:
    rank = FakeRank("bench", 0)
    for start in range(1, n + 1, 10_000):
        for f in frames(rank, min(10_000, n + 1 - start), start):
            take(f)


def _traced(n: int, take: Callable[[wire.Stats], None], where: str) -> int:
    """Bytes still allocated by code in file ``where`` after feeding n frames to ``take``."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    _feed(n, take)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    only = [tracemalloc.Filter(True, where)]
    diff = after.filter_traces(only).compare_to(before.filter_traces(only), "filename")
    return sum(d.size_diff for d in diff)


def history_bytes(n: int) -> tuple[int, int]:
    """(bytes of the bounded history, bytes of keeping every sample) for one rank, n frames."""
    fleet = Fleet()
    rank = FakeRank("bench", 0)
    state = fleet.apply(rank.hello())
    store = SeriesStore(fleet)
    bounded = _traced(n, lambda f: store.observe(state, f), series.__file__)
    every: dict[str, tuple[array[int], array[float]]] = {}

    def keep_all(f: wire.Stats) -> None:
        for name, value in values_of(f):
            if value is not None:
                steps, values = every.setdefault(name, (array("q"), array("d")))
                steps.append(f.step)
                values.append(value)

    return bounded, _traced(n, keep_all, __file__)


def ingest_cost(n: int, rounds: int) -> tuple[float, float]:
    """Median microseconds per frame of the whole ingest, without and with the history."""
    core = build_core(CollectorConfig(), persist=False)
    rank = FakeRank("bench", 0)
    raw = [wire.encode(f) for f in frames(rank, n * rounds * 2)]
    state = core.fleet.apply(rank.hello())
    listener = core.engine.frame_listeners[0]
    times: dict[bool, list[float]] = {False: [], True: []}
    it = iter(raw)
    for r in range(rounds):
        for with_history in (False, True) if r % 2 else (True, False):
            core.engine.frame_listeners[:] = [listener] if with_history else []
            t = time.perf_counter()
            for _ in range(n):
                frame = wire.decode(next(it))
                state = core.fleet.apply(frame)
                core.engine.on_frame(state, frame)
            times[with_history].append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(times[False]), statistics.median(times[True])


def observe_cost(n: int, rounds: int) -> float:
    """Median microseconds of the history's own call per stats frame."""
    fleet = Fleet()
    rank = FakeRank("bench", 0)
    state = fleet.apply(rank.hello())
    store = SeriesStore(fleet)
    every = frames(rank, n * rounds)
    times = []
    for r in range(rounds):
        block = every[r * n : (r + 1) * n]
        t = time.perf_counter()
        for f in block:
            store.observe(state, f)
        times.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=100_000, help="frames for the memory figure")
    p.add_argument("--rounds", type=int, default=20, help="blocks of 500 frames for the cost")
    args = p.parse_args()
    logging.disable(logging.WARNING)  # the rules' alert lines on the synthetic run
    print("| frames | bounded history | every sample kept |")
    print("| --- | --- | --- |")
    for n in sorted({1_000, 10_000, args.frames}):
        bounded, unbounded = history_bytes(n)
        print(f"| {n:,} | {bounded / 1024:,.1f} KiB | {unbounded / 1024:,.1f} KiB |")
    without, with_history = ingest_cost(500, args.rounds)
    print(f"\ningest per frame: {without:.1f} us without the history, {with_history:.1f} us with")
    print(f"(+{with_history - without:.1f} us, {100 * (with_history / without - 1):.1f} %)")
    print(f"the history's call alone: {observe_cost(1000, args.rounds):.2f} us per frame")


if __name__ == "__main__":
    main()
