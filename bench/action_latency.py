"""From a NaN on the wire to ``monitor.should_stop`` on the rank, through a real collector.

A collector process (``non_finite`` with ``action = "stop"``) and, in this process, a tiny
model trained by a plain loop with gradwatch's defaults (``flush_seconds`` 0.1). Each trial
is a fresh run: healthy steps until the agent is connected, then the loss turns NaN; the
latency is from the first NaN ``optimizer.step()`` to the first step boundary at which
``monitor.should_stop`` is true (the loop checks it every step, as users do). Beside it, the
baseline of the same run: a bare ZeroMQ DEALER → ROUTER → DEALER round trip on loopback.
Goal (issue 16): p99 <= 1 s.

Run: .venv/bin/python bench/action_latency.py [--trials 30]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import zmq
from harness import Collector, wait_until

import gradwatch.agent as ga

GOAL_SECONDS = 1.0


def start_collector(workdir: Path) -> Collector:
    rules = workdir / "rules.toml"
    rules.write_text('[rules.non_finite]\naction = "stop"\n')
    return Collector(workdir, "--rules", str(rules), "--log-level", "warning")


def trial(endpoint: str, n: int) -> tuple[float, int]:
    """Seconds from the first NaN step to should_stop, and the steps it took."""
    torch.manual_seed(n)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = ga.watch(model, opt, run=f"latency-{n}", endpoint=endpoint, rank=0, world_size=1)
    x = torch.randn(8, 16)
    try:
        wait_until(lambda: mon.sender.connected and mon.sender.hellos, 30)
        start = fault_step = 0
        for step in range(1, 1_000_000):
            if step == 20:  # a few healthy steps first (the rules' warm-ups)
                start, fault_step = time.perf_counter(), step
            loss = model(x).pow(2).mean()
            if fault_step:
                loss = loss * math.nan
            loss.backward()
            opt.step()
            opt.zero_grad()
            if mon.should_stop:
                return time.perf_counter() - start, step - fault_step
        raise RuntimeError("never stopped")
    finally:
        mon.close()


def zmq_round_trips(n: int) -> list[float]:
    """Bare DEALER → ROUTER → DEALER round trips of a 200-byte message on loopback."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            if router.poll(20):
                router.send_multipart(router.recv_multipart())

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    out = []
    payload = b"x" * 200
    for _ in range(n + 10):
        t = time.perf_counter()
        dealer.send(payload)
        dealer.recv()
        out.append(time.perf_counter() - t)
    stop.set()
    thread.join()
    dealer.close(0)
    router.close(0)
    ctx.term()
    return out[10:]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=30)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        collector = start_collector(Path(tmp))
        try:
            results = [trial(collector.listen, n) for n in range(a.trials)]
        finally:
            collector.stop()
    base = zmq_round_trips(1000)
    lat = [r[0] for r in results]
    steps = [r[1] for r in results]
    print(f"{'':34} {'p50':>10} {'p99':>10} {'max':>10}")
    print(f"{'baseline: bare zmq round trip':34} {pct(base, .5) * 1e3:>8.3f}ms "
          f"{pct(base, .99) * 1e3:>8.3f}ms {max(base) * 1e3:>8.3f}ms")  # fmt: skip
    print(f"{'NaN step -> should_stop':34} {pct(lat, .5) * 1e3:>8.1f}ms "
          f"{pct(lat, .99) * 1e3:>8.1f}ms {max(lat) * 1e3:>8.1f}ms")  # fmt: skip
    print(
        f"steps from the NaN to the stop: median {statistics.median(steps):.0f}, max "
        f"{max(steps)} ({a.trials} trials)"
    )
    ok = pct(lat, 0.99) <= GOAL_SECONDS
    print(f"goal p99 <= {GOAL_SECONDS:.0f} s: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
