"""The collector under 5,000 runs: resident memory, ``GET /runs`` and ``/metrics`` times and sizes,
beside a baseline measured in the same run (the same requests against the empty collector).

A real collector process on free ports; every run sends one hello and one NaN frame (one
critical alert each) over a real ZeroMQ socket. Then one hello of ``--max-params`` parameters
(the largest admitted) and one 4x bigger (refused), to show what a hello costs and that the
limit holds. Goals (issue 11): ``/runs`` page <= 100 ms, ``/metrics`` <= 500 ms, RSS <= 300 MiB.

Run: .venv/bin/python bench/collector_limits.py [--runs 5000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import zmq
from harness import Collector, wait_until

from gradwatch import wire

GOALS = {"runs_ms": 100.0, "metrics_ms": 500.0, "rss_mib": 300.0}
MAX_PARAMS = 50_000  # the --max-params default
PARAMS = [(f"blocks.{i // 4}.w{i % 4}", (64, 64), "float32") for i in range(8)]


def hello(run: str, params: list[tuple[str, tuple[int, ...], str]]) -> bytes:
    table = tuple(wire.ParamInfo(n, s, d, math.prod(s), True) for n, s, d in params)
    session = uuid.uuid4().hex[:16]
    frame = wire.Hello(
        run, 0, session, 1, "bench", 1, "2.4", "cpu", "AdamW", table, seq=0, time=1.0
    )
    return wire.encode(frame)


def nan_stats(run: str, data: bytes) -> bytes:
    session = wire.decode(data).session
    rows = wire.pack_floats([0.5] * len(PARAMS))
    frame = wire.Stats(run, 0, session, 1, 1, 1.0, math.nan, (1e-3,), rows)
    return wire.encode(frame)


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found is not None
    return int(found.group(1)) / 1024


def timed(client: httpx.Client, url: str, repeats: int) -> tuple[float, int]:
    """Median milliseconds of ``repeats`` GETs, and the response size in bytes."""
    times, size = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1e3)
        response.raise_for_status()
        size = len(response.content)
    return statistics.median(times), size


def counter(client: httpx.Client, base: str, name: str) -> float:
    text = client.get(base + "/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else math.nan


def measure(proc: Collector, client: httpx.Client, repeats: int) -> dict[str, float]:
    base = proc.http
    out = {"rss_mib": rss_mib(proc.pid)}
    out["health_ms"], _ = timed(client, base + "/healthz", repeats)
    out["runs_ms"], out["runs_bytes"] = timed(client, base + "/runs?limit=100", repeats)
    out["runs_last_ms"], _ = timed(client, base + "/runs?limit=100&offset=4900", repeats)
    out["metrics_ms"], out["metrics_bytes"] = timed(client, base + "/metrics", repeats)
    text = client.get(base + "/metrics").text
    out["series"] = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return out


def send(endpoint: str, frames: list[bytes]) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.LINGER, 120_000)
    sock.connect(endpoint)
    for data in frames:
        sock.send(data)
    sock.close()
    ctx.term()


def wide_hello(run: str, params: int) -> bytes:
    return hello(run, [(f"layers.{i}.weight", (64, 64), "float32") for i in range(params)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=120) as client:
        max_runs = str(args.runs + 100)  # every run live: the hardest case for /metrics
        proc = Collector(Path(tmp), "--max-runs", max_runs, "--log-level", "warning")
        try:
            base = measure(proc, client, args.repeats)
            # What one hello holds, measured on the fresh process (later, freed memory from
            # the load would hide it): the largest admitted, then one 4x bigger (refused).
            before = rss_mib(proc.pid)
            send(proc.listen, [wide_hello("wide-ok", MAX_PARAMS)])
            wait_until(lambda: client.get(proc.http + "/runs/wide-ok").status_code == 200, 120)
            admitted = rss_mib(proc.pid) - before
            before = rss_mib(proc.pid)
            send(proc.listen, [wide_hello("wide-refused", 4 * MAX_PARAMS)])
            wait_until(
                lambda: (
                    counter(client, proc.http, 'gradwatch_limit_hits_total{limit="max_params"}')
                    >= 1
                ),
                120,
            )
            refused = rss_mib(proc.pid) - before
            frames = []
            for i in range(args.runs):
                first = hello(f"bench-{i:05d}", PARAMS)
                frames += [first, nan_stats(f"bench-{i:05d}", first)]
            started = time.perf_counter()
            sent = counter(client, proc.http, "gradwatch_messages_total") + len(frames)
            send(proc.listen, frames)
            wait_until(
                lambda: counter(client, proc.http, "gradwatch_messages_total") >= sent,
                600,
                interval=0.5,
            )
            ingest_s = time.perf_counter() - started
            alerts = client.get(proc.http + "/alerts?limit=1").json()["total"]
            loaded = measure(proc, client, args.repeats)
        finally:
            proc.stop()

    print(f"collector with {args.runs} runs (one hello + one NaN frame each; {alerts} alerts),")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"ingested in {ingest_s:.1f} s; medians of {args.repeats} requests; load average {load}")
    print()
    print(f"| measure | empty collector (baseline) | {args.runs:,} runs | goal |")
    print("| --- | --- | --- | --- |")
    rows = [
        ("RSS MiB", "rss_mib", "{:.0f}", GOALS["rss_mib"]),
        ("GET /healthz ms", "health_ms", "{:.1f}", None),
        ("GET /runs?limit=100 ms", "runs_ms", "{:.1f}", GOALS["runs_ms"]),
        ("GET /runs?limit=100&offset=4900 ms", "runs_last_ms", "{:.1f}", GOALS["runs_ms"]),
        ("/runs page bytes", "runs_bytes", "{:.0f}", None),
        ("GET /metrics ms", "metrics_ms", "{:.0f}", GOALS["metrics_ms"]),
        ("/metrics bytes", "metrics_bytes", "{:.0f}", None),
        ("/metrics series", "series", "{:.0f}", None),
    ]
    met = True
    for label, key, fmt, goal in rows:
        verdict = ""
        if goal is not None:
            ok = loaded[key] <= goal
            met &= ok
            verdict = f"<= {goal:g}: {'met' if ok else 'NOT met'}"
        print(f"| {label} | {fmt.format(base[key])} | {fmt.format(loaded[key])} | {verdict} |")
    print()
    print(f"a hello of {MAX_PARAMS} parameters (the --max-params default): +{admitted:.0f} MiB RSS")
    print(f"a hello of {4 * MAX_PARAMS} parameters (refused, counted): +{refused:.0f} MiB RSS")
    print(f"goals {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
