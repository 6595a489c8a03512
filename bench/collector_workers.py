"""``--workers N`` (issue 12): frames per second one collector ingests with 1, 2 (and more)
worker processes on this machine's cores, beside a bare receive+unpack loop in the same run.

The frames (8 runs x 8 ranks x 200 parameters, as the agent encodes them, a full step every
50) are pre-encoded and sent in one go from this process; the collector and its workers may
use every core (the sender's share is small: it only writes bytes to a socket). End of a
batch: one sentinel hello per worker (a run hashed to each), sent after the frames on the same
socket, polled for with ``GET /runs/<sentinel>``. ``--workers 1`` is the one-process collector
(no router); N > 1 adds the main process's router, which forwards each message whole.

Run: .venv/bin/python bench/collector_workers.py [--frames 20000] [--repeat 3] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fleet_load import BareLoop, Collector, Pusher, Rank, batch, cpu_seconds, ingest_cpu, job
from harness import wait_until

from gradwatch.collector.shard import shard_of

RUNS, RANKS, PARAMS = 8, 8, 200


def names_per_worker(prefix: str, workers: int, each: int) -> list[str]:
    """``each`` run names hashed to every one of ``workers`` workers."""
    out: dict[int, list[str]] = {k: [] for k in range(workers)}
    i = 0
    while any(len(v) < each for v in out.values()):
        name = f"{prefix}-{i}"
        i += 1
        if len(out[shard_of(name, workers)]) < each:
            out[shard_of(name, workers)].append(name)
    return [name for k in range(workers) for name in out[k]]


def measure(tmp: Path, workers: int, frames: int) -> dict[str, float]:
    """One collector with ``workers`` workers: wall seconds for ``frames``, and CPU."""
    runs = names_per_worker("run", max(workers, 1), RUNS // max(workers, 1))
    ranks = [r for name in runs for r in job(name, RANKS, PARAMS)]
    data = batch(ranks, frames)
    proc = Collector(tmp, {0, 1}, "--workers", str(workers))
    push = Pusher(proc.listen)
    try:
        marks = [Rank(n, 0, 1, 1).hello() for n in names_per_worker("sentinel", workers, 1)]
        hellos = [r.hello() for r in ranks]
        push.send(hellos)
        wait_until(lambda: all(proc.has_run(run) for run in runs), 120)
        cpu0, main0, start = ingest_cpu(proc.pid), cpu_seconds(proc.pid), time.perf_counter()
        push.send(data)
        push.send(marks)
        sentinels = names_per_worker("sentinel", workers, 1)
        wait_until(lambda: all(proc.has_run(s) for s in sentinels), 600, 0.02)
        wall = time.perf_counter() - start
        cpu, main = ingest_cpu(proc.pid) - cpu0, cpu_seconds(proc.pid) - main0
    finally:
        push.close()
        proc.stop()
    return {"rate": frames / wall, "cpu": cpu, "main_cpu": main, "per_cpu": frames / cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    print(f"{RUNS} runs x {RANKS} ranks x {PARAMS} params, {args.frames} frames, "
          f"median of {args.repeat}", flush=True)  # fmt: skip
    rows = ["| workers | frames/s (wall), median [range] | CPU-s per 1k frames (all processes) "
            "| of which the main process | speed-up vs 1 |",
            "| --- | --- | --- | --- | --- |"]  # fmt: skip
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for workers in counts:
            got = [measure(Path(tmp), workers, args.frames) for _ in range(args.repeat)]
            rates = [g["rate"] for g in got]
            rate = statistics.median(rates)
            base = base or rate
            cpu = statistics.median(g["cpu"] for g in got) / args.frames * 1000
            main_cpu = statistics.median(g["main_cpu"] for g in got) / args.frames * 1000
            rows.append(f"| {workers} | {rate:,.0f} [{min(rates):,.0f}-{max(rates):,.0f}] "
                        f"| {cpu:.3f} | {main_cpu:.3f} | {rate / base:.2f}x |")  # fmt: skip
            print(rows[-1], flush=True)
        bare = BareLoop()
        try:
            ranks = job("bare", RANKS, PARAMS)
            frames = batch(ranks, args.frames)
            push = Pusher(bare.listen)
            seconds, _ = bare.deliver(push, frames)
            push.close()
        finally:
            bare.stop()
    rows.append(f"| bare receive+unpack, one core | {len(frames) / seconds:,.0f} | | | |")
    print(rows[-1])
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
