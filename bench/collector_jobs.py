"""Collector cost of the job-level rules on a large DDP job (no sockets: decode, apply, judge).

Two collector cores take the same frames of one job, interleaved round by round so machine
noise hits both alike: *per-rank rules* (the job-level rules off: the baseline) and *all rules*
(rank_stalled, rank_crashed, rank_missing, straggler and replica_divergence on). Reported: the
median microseconds per stats frame (the step comparisons run once per step every rank has
reported, here included), per heartbeat, and one clock tick over the whole job.
Run: .venv/bin/python bench/collector_jobs.py [--ranks 1024] [--params 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from gradwatch import wire
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import Core, build_core
from gradwatch.collector.rules import build_rules

JOB_RULES = ("rank_stalled", "rank_crashed", "rank_missing", "straggler", "replica_divergence")
PHASES = {"phase_data_seconds": 0.002, "phase_forward_seconds": 0.03,
          "phase_backward_seconds": 0.06, "phase_optimizer_seconds": 0.01}  # fmt: skip


def frames(ranks: int, params: int, step: int, full: bool) -> list[wire.Stats]:
    rows = wire.pack_floats([0.5 + i * 1e-3 for i in range(params)])
    full_rows = wire.pack_floats([0.1] * params * len(wire.FULL_FIELDS)) if full else b""
    metrics = {"grad_norm": 1.0, "step_time_seconds": 0.1, **PHASES}
    return [
        wire.Stats("job", r, f"s{r}", step, step, float(step), 2.0, (1e-3,), rows, full_rows,
                   metrics=metrics)
        for r in range(ranks)
    ]  # fmt: skip


def hello(rank: int, ranks: int, params: int) -> wire.Hello:
    table = tuple(wire.ParamInfo(f"p{i}", (64, 64), "float32", 4096, True) for i in range(params))
    return wire.Hello("job", rank, f"s{rank}", ranks, "host", 1000 + rank, "2.4", "cuda:0",
                      "AdamW", table, replicated=True)  # fmt: skip


def feed(core: Core, encoded: list[bytes], now: float) -> float:
    """Seconds to decode, apply and judge ``encoded`` at collector time ``now``."""
    t0 = time.perf_counter()
    for data in encoded:
        frame = wire.decode(data)
        state = core.fleet.apply(frame, now)
        core.engine.on_frame(state, frame, now)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ranks", type=int, default=1024)
    p.add_argument("--params", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    off = {name: {"enabled": False} for name in JOB_RULES}
    cores = {
        "per-rank rules": build_core(CollectorConfig(), build_rules(off), persist=False),
        "all rules": build_core(CollectorConfig(), build_rules(), persist=False),
    }
    hellos = [wire.encode(hello(r, args.ranks, args.params)) for r in range(args.ranks)]
    now = 1000.0
    for core in cores.values():
        feed(core, hellos, now)
    stats: dict[str, list[float]] = {name: [] for name in cores}
    beats: dict[str, list[float]] = {name: [] for name in cores}
    ticks: dict[str, list[float]] = {name: [] for name in cores}
    for step in range(1, args.rounds * 10 + 1):
        now += 1.0
        batch = [wire.encode(f) for f in frames(args.ranks, args.params, step, step % 10 == 0)]
        hb = [
            wire.encode(wire.Heartbeat("job", r, f"s{r}", 0, step, now, 0, "backward", 0.01))
            for r in range(args.ranks)
        ]
        for name, core in cores.items():
            stats[name].append(feed(core, batch, now) / args.ranks * 1e6)
            beats[name].append(feed(core, hb, now) / args.ranks * 1e6)
            t0 = time.perf_counter()
            core.engine.tick(now)
            ticks[name].append((time.perf_counter() - t0) * 1e3)
    print(f"{args.ranks} ranks x {args.params} parameters, {args.rounds * 10} steps (1 in 10 full)")
    print("| rules | us / stats frame | us / heartbeat | ms / tick |")
    print("| --- | --- | --- | --- |")
    for name in cores:
        print(
            f"| {name} | {statistics.median(stats[name]):.0f} | "
            f"{statistics.median(beats[name]):.0f} | {statistics.median(ticks[name]):.1f} |"
        )


if __name__ == "__main__":
    main()
