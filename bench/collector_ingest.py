"""The collector at fleet scale (issue 12): ingest rate, a fleet's backlog, ``/metrics`` and
frame → alert times, each beside a baseline measured in the same run.

Frames are built with the project's encoder as the agent builds them (per-parameter rows, a
full step every 50, the agent's frame metrics) and pre-encoded; the bench process sends them
over real ZeroMQ sockets (DEALER, as the agent) from the other core. The collector is a real
process (``python -m gradwatch.collector``) pinned to one core (``os.sched_setaffinity``
before exec, so all its threads inherit it); the baseline is a bare ROUTER (PULL for older
collectors) + ``msgpack.unpackb`` loop pinned to the same core. End of a batch: a sentinel
hello sent after the batch on the same socket (ZeroMQ keeps one pipe's order) and polled for
with ``GET /runs/<sentinel>``.

Parts: ``ingest`` (frames/s, 200 and 500 params x 1, 8, 64 ranks), ``fleet`` (256 ranks x 10
frames/s: ingested in time, lag p99, CPU, RSS, drain time, frame → alert under load),
``metrics`` (``/metrics`` p50/p99 at 64 and 256 ranks x 500 params; keep-alive requests),
``rules`` and ``breakdown`` (the same frames without sockets: every rule vs the shed path, and
µs per frame by step and rule). More than one core (``--workers``): bench/collector_workers.py.

Run: .venv/bin/python bench/collector_ingest.py [--quick] [--parts ingest,rules,fleet,metrics]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import fleet_load
import httpx
from collector_limits import rss_mib, wait_until  # sibling benches (bench/ is on the path)
from fleet_load import (
    COLLECTOR_CORE,
    FULL_EVERY,
    SENDER_CORE,
    BareLoop,
    Collector,
    Pusher,
    Rank,
    batch,
    cpu_seconds,
    job,
    pct,
    pin,
)

GOALS = {"ingest_200": 20_000.0, "ingest_500": 8_000.0, "metrics_p99_ms": 100.0,
         "alert_p99_ms": 50.0, "keepalive_ms": 5.0, "lag_p99_s": 1.0}  # fmt: skip


JUDGED = r"""
import os, sys, time
core, here, nranks, params, frames = sys.argv[1:6]
os.sched_setaffinity(0, {int(core)}); sys.path.insert(0, here)
import fleet_load as b
from gradwatch import wire
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import build_core
core = build_core(CollectorConfig(), persist=False)
ranks = b.job("x", int(nranks), int(params))
hellos, data = [r.hello() for r in ranks], b.batch(ranks, int(frames))
for d in hellos:
    f = wire.decode(d); core.engine.on_frame(core.fleet.apply(f), f)
shed = {"shed": True} if sys.argv[6:] == ["shed"] else {}
t = time.process_time()
for d in data:
    f = wire.decode(d); s = core.fleet.apply(f)
    core.engine.on_frame(s, f, **(shed if not f.full else {}))
print(len(data) / (time.process_time() - t))
"""
BREAKDOWN = r"""
import collections, os, sys, time
core, here, nranks, params, frames = sys.argv[1:6]
os.sched_setaffinity(0, {int(core)}); sys.path.insert(0, here)
import fleet_load as b
from gradwatch import wire
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import build_core
core = build_core(CollectorConfig(), persist=False)
engine, cost = core.engine, collections.Counter()
judge = engine._judge
def timed(rule, where, fn, *args):
    t = time.process_time(); out = judge(rule, where, fn, *args)
    cost[rule.name] += time.process_time() - t
    return out
engine._judge = timed
ranks = b.job("x", int(nranks), int(params))
for d in [r.hello() for r in ranks]:
    f = wire.decode(d); engine.on_frame(core.fleet.apply(f), f)
data = b.batch(ranks, int(frames))
cost.clear()
def lap(name, fn, *args):
    t = time.process_time(); out = fn(*args); cost[name] += time.process_time() - t
    return out
t0 = time.process_time()
for d in data:
    f = lap("(decode)", wire.decode, d)
    s = lap("(fold: Fleet.apply)", core.fleet.apply, f)
    lap("(judge: Engine.on_frame, every rule)", engine.on_frame, s, f)
cost["(whole frame)"] = time.process_time() - t0
for name, seconds in cost.most_common():
    print(f"{name} {seconds / len(data) * 1e6:.1f}")
"""


# ----------------------------------------------------------------------------- parts


def part_ingest(tmp: Path, args: argparse.Namespace) -> list[str]:
    rows = ["| params x ranks | collector frames/s (wall) | collector frames per CPU-second "
            "| bare receive+unpack frames/s (wall) | bare, per CPU-second | ratio (CPU) | goal |",
            "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    bare = BareLoop()
    try:
        for params in (200, 500):
            for nranks in (1, 8, 64):
                ranks = job(f"ingest-{params}-{nranks}", nranks, params)
                frames = batch(ranks, args.frames)
                proc = Collector(tmp, COLLECTOR_CORE)
                push = Pusher(proc.listen)
                try:
                    proc.deliver(push, [r.hello() for r in ranks])
                    seconds = proc.deliver(push, frames)
                    cpu = proc.cpu
                    if args.py_spy and params == 200 and nranks == 8:
                        profile(proc, push, frames, args.py_spy)
                finally:
                    push.close()
                    proc.stop()
                bare_push = Pusher(bare.listen)
                bare_s, b = bare.deliver(bare_push, frames)
                bare_push.close()
                rate, floor = len(frames) / seconds, len(frames) / bare_s
                per_cpu, bare_cpu = len(frames) / cpu, len(frames) / b["cpu"]
                goal = GOALS[f"ingest_{params}"]
                verdict = f">= {goal:,.0f}: {'met' if per_cpu >= goal else 'NOT met'}"
                ratio = 100 * per_cpu / bare_cpu
                rows.append(f"| {params} x {nranks} | {rate:,.0f} | {per_cpu:,.0f} | {floor:,.0f} "
                            f"| {bare_cpu:,.0f} | {ratio:.1f} % | {verdict} |")  # fmt: skip
                print(rows[-1], flush=True)
    finally:
        bare.stop()
    return rows


def judged(params: int, nranks: int, frames: int, shed: bool) -> float:
    """Frames per CPU-second of decode, fold and rules alone (no sockets), in a process pinned
    to the collector's core: every rule on every frame, or the shed path (``shed``)."""
    argv = [str(x) for x in (COLLECTOR_CORE, Path(__file__).parent, nranks, params, frames)]
    done = subprocess.run([sys.executable, "-c", JUDGED, *argv, *(["shed"] if shed else [])],
                          capture_output=True, text=True, cwd=fleet_load.TREE, check=True,
                          preexec_fn=pin(COLLECTOR_CORE))  # fmt: skip
    return float(done.stdout.split()[-1])


def part_breakdown(tmp: Path, args: argparse.Namespace) -> list[str]:
    """Microseconds of CPU per stats frame by step and by rule (8 ranks x 200 params, every
    rule on every frame; process_time around each call, so the sum slightly overstates)."""
    argv = [str(x) for x in (COLLECTOR_CORE, Path(__file__).parent, 8, 200, args.frames // 2)]
    done = subprocess.run([sys.executable, "-c", BREAKDOWN, *argv], capture_output=True,
                          text=True, cwd=fleet_load.TREE, check=True,
                          preexec_fn=pin(COLLECTOR_CORE))  # fmt: skip
    rows = ["| 8 ranks x 200 params, every rule | µs CPU per stats frame |", "| --- | --- |"]
    for line in done.stdout.splitlines():
        name, value = line.rsplit(" ", 1)
        rows.append(f"| {name} | {float(value):.1f} |")
        print(rows[-1], flush=True)
    return rows


def part_rules(tmp: Path, args: argparse.Namespace) -> list[str]:
    rows = ["| params x ranks | every rule on every frame, frames per CPU-second | shed path "
            "(the rules where one frame matters) |", "| --- | --- | --- |"]  # fmt: skip
    for params in (200, 500):
        for nranks in (1, 8, 64):
            n = args.frames // 2
            full, shed = judged(params, nranks, n, False), judged(params, nranks, n, True)
            rows.append(f"| {params} x {nranks} | {full:,.0f} | {shed:,.0f} |")
            print(rows[-1], flush=True)
    return rows


def profile(proc: Collector, push: Pusher, frames: list[bytes], out: str) -> None:
    """py-spy on the collector while it ingests ``frames`` (collapsed stacks to ``out``)."""
    spy = Path(sys.executable).with_name("py-spy")
    rec = subprocess.Popen([str(spy), "record", "--pid", str(proc.pid), "--rate", "250",
                            "--format", "raw", "--output", out, "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(1.0)  # py-spy attaches
    for _ in range(3):
        proc.deliver(push, frames)
    rec.send_signal(signal.SIGINT)
    rec.wait(60)


class AlertWatch:
    """Reads ``/alerts/stream`` and notes when each run's first firing alert arrived."""

    def __init__(self, http: str) -> None:
        self.seen: dict[str, float] = {}
        self._thread = threading.Thread(target=self._read, args=(http,), daemon=True)
        self._thread.start()

    def _read(self, http: str) -> None:
        with (
            httpx.Client(timeout=None) as client,
            client.stream("GET", http + "/alerts/stream") as r,
        ):
            for line in r.iter_lines():
                if line.startswith("data:"):
                    alert = json.loads(line[5:])
                    if alert.get("state") == "firing":
                        self.seen.setdefault(alert["run"], time.perf_counter())


def probe(push: Pusher) -> tuple[str, float]:
    """A new run whose first frame has a NaN loss (a critical alert at once); its send time."""
    rank = Rank(f"probe-{uuid.uuid4().hex[:8]}", 0, 1, 8)
    push.send([rank.hello()])
    start = time.perf_counter()
    push.send([rank.stats(1, loss=math.nan)])
    return rank.run, start


def alert_times(proc: Collector, count: int, every: float, load: Callable[[], None]) -> list[float]:
    """Milliseconds from a probe's NaN frame to its firing alert on the stream, ``count``
    probes ``every`` seconds apart, calling ``load()`` between (the fleet's frames)."""
    watch = AlertWatch(proc.http)
    time.sleep(0.5)  # the stream is connected
    push = Pusher(proc.listen)
    sent: dict[str, float] = {}
    next_probe = time.perf_counter()
    while len(sent) < count:
        if time.perf_counter() >= next_probe:
            run, at = probe(push)
            sent[run] = at
            next_probe += every
        load()
    wait_until(lambda: all(r in watch.seen for r in sent), 120)
    push.close()
    return [(watch.seen[r] - at) * 1e3 for r, at in sent.items()]


def part_fleet(tmp: Path, args: argparse.Namespace) -> list[str]:
    nranks, rate, params = args.fleet_ranks, args.fleet_rate, 200
    duration = args.fleet_seconds
    ranks = job("fleet", nranks, params)
    proc = Collector(tmp, COLLECTOR_CORE)
    push = Pusher(proc.listen)
    out: dict[str, float] = {}
    try:
        idle = alert_times(proc, 20, 0.1, lambda: time.sleep(0.005))
        proc.deliver(push, [r.hello() for r in ranks])  # built now: their time is now
        out["rss0"], cpu0 = rss_mib(proc.pid), cpu_seconds(proc.pid)
        step, start = 0, time.perf_counter()
        scrapes: list[float] = []
        next_scrape = start + 1.0

        def load() -> None:
            nonlocal step, next_scrape
            if time.perf_counter() >= next_scrape:  # what Prometheus sees meanwhile
                t0 = time.perf_counter()
                proc.client.get(proc.http + "/metrics").raise_for_status()
                scrapes.append((time.perf_counter() - t0) * 1e3)
                next_scrape += 2.0
            due = int((time.perf_counter() - start) * rate)
            while step < due:
                step += 1
                push.send([r.stats(step) for r in ranks])
            time.sleep(max(0.0, start + (step + 1) / rate - time.perf_counter()))

        n_probes = int(duration * 2)
        busy = alert_times(proc, n_probes, duration / n_probes, load)
        while time.perf_counter() - start < duration:
            load()
        loaded_s = time.perf_counter() - start
        out["cpu"] = (cpu_seconds(proc.pid) - cpu0) / loaded_s
        out["drain"] = proc.deliver(push, [])
        out["rss1"] = rss_mib(proc.pid)
        out["frames"] = step * nranks
        text = proc.client.get(proc.http + "/metrics").text
        out.update(lag_figures(text))
    finally:
        push.close()
        proc.stop()
    bare = BareLoop()
    try:
        bare_push = Pusher(bare.listen)
        step, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            due = int((time.perf_counter() - start) * rate)
            while step < due:
                step += 1
                bare_push.send([r.stats(step) for r in ranks])
            time.sleep(max(0.0, start + (step + 1) / rate - time.perf_counter()))
        _, b = bare.deliver(bare_push, [])
        bare_push.close()
    finally:
        bare.stop()
    total = out["frames"]
    in_time = out.get("in_time", math.nan)  # a fraction of every frame handled
    rows = [f"fleet: {nranks} ranks x {rate} frames/s x {duration:.0f} s, {params} params "
            f"({total:,.0f} frames)", "",
            "| measure | collector | bare receive+unpack (same load) | goal |",
            "| --- | --- | --- | --- |",
            f"| ingested in time (lag <= 1 s) | {100 * in_time:.1f} % | "
            f"{100 * (b['n'] - 1 - b['late']) / max(b['n'] - 1, 1):.1f} % | 100 % |",
            f"| lag p99 s | {out.get('lag_p99', math.nan):.3f} | {b['lag_p99']:.3f} | <= 1 |",
            f"| CPU while loaded | {100 * out['cpu']:.0f} % | "
            f"{100 * b['cpu'] / duration:.0f} % | |",
            f"| RSS MiB start → end | {out['rss0']:.0f} → {out['rss1']:.0f} | max {b['rss']:.0f} "
            "| flat |",
            f"| backlog drained after the load | {out['drain']:.2f} s | | |",
            f"| stats frames shed (sheddable rules skipped) | {out.get('shed', 0):,.0f} | | |",
            "", "| frame → alert (NaN probe to SSE) | p50 ms | p99 ms | goal |",
            "| --- | --- | --- | --- |",
            f"| idle collector (baseline) | {pct(idle, .5):.1f} | {pct(idle, .99):.1f} | |",
            f"| under the fleet's load | {pct(busy, .5):.1f} | {pct(busy, .99):.1f} | "
            f"<= {GOALS['alert_p99_ms']:g} |",
            f"| `/metrics` every 2 s under the load ({nranks} x {params}) | "
            f"{pct(scrapes, .5):.1f} | {pct(scrapes, .99):.1f} | |"]  # fmt: skip
    for row in rows:
        print(row, flush=True)
    return rows


def lag_figures(text: str) -> dict[str, float]:
    """Frames handled within 1 s, the lag p99 (bucket bound) and shed frames, from /metrics."""
    buckets = [(float(le), float(v)) for le, v in re.findall(
        r'^gradwatch_ingest_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)]  # fmt: skip
    out: dict[str, float] = {}
    if buckets:
        total = buckets[-1][1]
        out["in_time"] = next(v for le, v in buckets if le >= 1.0) / total
        out["lag_p99"] = next(le for le, v in buckets if v >= 0.99 * total)
    shed = re.search(r"^gradwatch_frames_shed_total (\S+)$", text, re.M)
    if shed:
        out["shed"] = float(shed.group(1))
    return out


def timed_gets(client: httpx.Client, url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.get(url).raise_for_status()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def part_metrics(tmp: Path, args: argparse.Namespace) -> list[str]:
    rows = ["| ranks x 500 params | /metrics p50 ms | p99 ms | bytes | /healthz p50 ms (baseline) "
            "| goal (p99) |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    proc = Collector(tmp, COLLECTOR_CORE)
    push = Pusher(proc.listen)
    try:
        held: list[Rank] = []
        for nranks in (64, 256):
            new = [Rank("scrape", r, 256, 500) for r in range(len(held), nranks)]
            proc.deliver(push, [r.hello() for r in new])
            held += new
            proc.deliver(push, [r.stats(s) for s in (FULL_EVERY, FULL_EVERY + 1) for r in held])
            times = timed_gets(proc.client, proc.http + "/metrics", args.scrapes)
            size = len(proc.client.get(proc.http + "/metrics").content)
            health = timed_gets(proc.client, proc.http + "/healthz", args.scrapes)
            p99, goal = pct(times, 0.99), GOALS["metrics_p99_ms"]
            verdict = "met" if p99 <= goal else "NOT met"
            rows.append(f"| {nranks} | {pct(times, .5):.1f} | {p99:.1f} | {size:,} | "
                        f"{pct(health, .5):.1f} | <= {goal:g}: {verdict} |")  # fmt: skip
            print(rows[-1], flush=True)
        keep = timed_gets(proc.client, proc.http + "/healthz", 200)
        fresh = []
        for _ in range(200):
            t0 = time.perf_counter()
            httpx.get(proc.http + "/healthz").raise_for_status()
            fresh.append((time.perf_counter() - t0) * 1e3)
        goal = GOALS["keepalive_ms"]
        rows += ["", "| /healthz x 200 | p50 ms | p99 ms | goal |", "| --- | --- | --- | --- |",
                 f"| one keep-alive connection | {pct(keep, .5):.2f} | {pct(keep, .99):.2f} | "
                 f"<= {goal:g}: {'met' if pct(keep, .5) <= goal else 'NOT met'} |",
                 f"| a new connection each (baseline) | {pct(fresh, .5):.2f} | "
                 f"{pct(fresh, .99):.2f} | |"]  # fmt: skip
        for row in rows[-4:]:
            print(row, flush=True)
    finally:
        push.close()
        proc.stop()
    return rows


PARTS: dict[str, Callable[[Path, argparse.Namespace], list[str]]] = {
    "ingest": part_ingest, "rules": part_rules, "breakdown": part_breakdown, "fleet": part_fleet,
    "metrics": part_metrics,
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter fleet run, fewer frames")
    parser.add_argument("--parts", default="ingest,rules,fleet,metrics")
    parser.add_argument("--frames", type=int, default=30_000, help="frames per ingest batch")
    parser.add_argument("--fleet-ranks", type=int, default=256)
    parser.add_argument("--fleet-rate", type=float, default=10.0, help="frames/s per rank")
    parser.add_argument("--fleet-seconds", type=float, default=60.0)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--py-spy", default="", help="collapsed stacks of the 200 x 8 ingest")
    parser.add_argument("--tree", default="", help="run the collector of this checkout")
    parser.add_argument("--collector-arg", action="append", default=[],
                        help="a flag for every collector started (repeat)")  # fmt: skip
    args = parser.parse_args()
    if args.tree:
        fleet_load.TREE = Path(args.tree).resolve()
    tree = fleet_load.TREE
    fleet_load.ROUTER = "zmq.ROUTER" in (tree / "collector" / "ingest.py").read_text()
    fleet_load.EXTRA.extend(args.collector_arg)
    if args.quick:
        args.frames, args.fleet_seconds, args.scrapes = 10_000, 15.0, 20
    os.sched_setaffinity(0, {SENDER_CORE})
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"collector of {tree} pinned to core {COLLECTOR_CORE}, sender to core {SENDER_CORE}; "
          f"load average {load}", flush=True)  # fmt: skip
    report: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.parts.split(","):
            print(f"\n## {name}\n", flush=True)
            report += ["", f"## {name}", "", *PARTS[name](Path(tmp), args)]
    print("\n".join(["", "# summary", *report]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
