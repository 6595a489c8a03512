"""What the collector benches send and run: frames as the agent builds them, the agent's
socket, a collector process and a bare receive loop pinned to one core, CPU readings."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import zmq
from collector_limits import wait_until  # the sibling bench (bench/ is on the path)

from gradwatch import wire
from gradwatch.wire import metrics as m

TREE = Path(__file__).resolve().parents[1]
"""The checkout whose collector runs (``--tree`` runs another, e.g. main's, for a before)."""
EXTRA: list[str] = []
"""Flags added to every collector started (``--collector-arg``)."""
COLLECTOR_CORE = 0
SENDER_CORE = 1
FULL_EVERY = 50

ROUTER = True
"""The collector reads a ROUTER socket (agents send on DEALER); False: PULL (agents PUSH),
as before the back channel. Set from the checkout measured."""
BARE_LOOP = r"""
import os, sys, time, resource, msgpack, zmq
router = sys.argv[1] == "router"
ctx = zmq.Context(); sock = ctx.socket(zmq.ROUTER if router else zmq.PULL)
sock.setsockopt(zmq.RCVHWM, 100000)
port = sock.bind_to_random_port("tcp://127.0.0.1"); print(port, flush=True)
lags, n, cpu0 = [], 0, time.process_time()
while True:
    obj = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
    n += 1
    lags.append(time.time() - obj["time"])
    if obj["run"].startswith("sentinel"):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        lags.sort(); p99 = lags[int(0.99 * (len(lags) - 1))]
        late = sum(1 for x in lags if x > 1.0)
        print(time.time(), n, p99, late, rss, time.process_time() - cpu0, flush=True)
        lags, n, cpu0 = [], 0, time.process_time()
"""


NICE = -10
"""Priority of the measured processes (collector, bare loop): on a shared machine other
tenants' processes would otherwise take most of the pinned core (needs root; skipped if not)."""


def pin(core: int | set[int]) -> Callable[[], None]:
    """For ``preexec_fn``: run on ``core`` only, at priority :data:`NICE`."""
    cores = {core} if isinstance(core, int) else core

    def setup() -> None:
        os.sched_setaffinity(0, cores)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, NICE)
        except PermissionError:
            pass

    return setup


# ----------------------------------------------------------------------------- frames


def names(params: int) -> list[str]:
    """A transformer's parameter names: 8 tensors a block."""
    parts = ("ln1.weight", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
             "ln2.weight", "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight")  # fmt: skip
    return [f"blocks.{i // 8}.{parts[i % 8]}" for i in range(params)]


class Rank:
    """One rank's frames, as the agent encodes them."""

    def __init__(self, run: str, rank: int, world: int, params: int) -> None:
        self.run, self.rank, self.world, self.params = run, rank, world, params
        self.session, self.seq = uuid.uuid4().hex[:16], 0
        shape = (64, 64)
        self.table = tuple(wire.ParamInfo(n, shape, "float32", 4096, True) for n in names(params))

    def hello(self) -> bytes:
        self.seq += 1
        frame = wire.Hello(self.run, self.rank, self.session, self.world, "bench", 1000 + self.rank,
                           "2.4", "cuda:0", "AdamW", self.table, seq=self.seq, time=time.time(),
                           replicated=True)  # fmt: skip
        return wire.encode(frame)

    def stats(self, step: int, when: float | None = None, loss: float | None = None) -> bytes:
        self.seq += 1
        wobble = 1.0 + 0.01 * math.sin(step * 0.7)  # replicas agree (DDP)
        norms = [0.05 * wobble * (1 + (i % 7) * 0.1) for i in range(self.params)]
        full = b""
        metrics = {m.GRAD_NORM: math.sqrt(math.fsum(x * x for x in norms)),
                   m.NONFINITE_GRADS: 0.0, m.STEP_TIME: 0.1, m.TOKENS_PER_SECOND: 1e5,
                   m.phase_seconds("data"): 0.002, m.phase_seconds("forward"): 0.03,
                   m.phase_seconds("backward"): 0.06, m.phase_seconds("optimizer"): 0.01,
                   m.MEMORY_ALLOCATED: 2e9, m.MEMORY_RESERVED: 3e9, m.RSS: 4e9}  # fmt: skip
        if step % FULL_EVERY == 0:
            row = [1e-3 * 5, 1e-3 * wobble, 0.0, 0.0, 0.5, 0.05, 5.0]
            full = wire.pack_floats(row * self.params)
            metrics.update({m.grad_percentile(p): 0.01 * p for p in m.GRAD_PERCENTILES})
        loss = (3.0 * math.exp(-step / 20_000) + 0.02 * wobble) if loss is None else loss
        frame = wire.Stats(self.run, self.rank, self.session, self.seq, step,
                           time.time() if when is None else when, loss, (1e-3,),
                           wire.pack_floats(norms), full, metrics=metrics)  # fmt: skip
        return wire.encode(frame)


def job(run: str, ranks: int, params: int) -> list[Rank]:
    return [Rank(run, r, ranks, params) for r in range(ranks)]


def sentinel() -> bytes:
    return Rank(f"sentinel-{uuid.uuid4().hex[:8]}", 0, 1, 1).hello()


def sentinel_run(data: bytes) -> str:
    return wire.decode(data).run


# ----------------------------------------------------------------------------- processes


class Pusher:
    """An agent's socket (DEALER, or PUSH for a PULL collector) that never blocks the bench
    (no send high-water mark)."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER if ROUTER else zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, frames: Iterable[bytes]) -> None:
        for data in frames:
            self.sock.send(data, copy=False)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


class Collector:
    """``python -m gradwatch.collector`` on free ports, pinned to ``cores``."""

    def __init__(self, workdir: Path, cores: int | set[int], *extra: str) -> None:
        ready = workdir / f"ready-{uuid.uuid4().hex[:6]}"
        cmd = [sys.executable, "-m", "gradwatch.collector", "--listen", "tcp://127.0.0.1:0",
               "--http", "127.0.0.1:0", "--db", str(workdir / f"{ready.name}.db"),
               "--ready-file", str(ready), "--log-level", "warning", *EXTRA, *extra]  # fmt: skip
        log = (workdir / f"{ready.name}.log").open("wb")
        self.proc = subprocess.Popen(cmd, stderr=log, preexec_fn=pin(cores), cwd=TREE)
        info = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), 60, 0.1)
        self.listen, self.http, self.pid = info["listen"], info["http"], self.proc.pid
        self.client = httpx.Client(timeout=120)

    def has_run(self, run: str) -> bool:
        return self.client.get(f"{self.http}/runs/{run}").status_code == 200

    def deliver(self, push: Pusher, frames: list[bytes], timeout: float = 600) -> float:
        """Send ``frames`` then a sentinel on ``push``; seconds until the sentinel is handled
        (``self.cpu``: CPU seconds the ingest threads and ZeroMQ's I/O threads spent)."""
        mark = sentinel()
        cpu0, start = ingest_cpu(self.pid), time.perf_counter()
        push.send(frames)
        push.send([mark])
        wait_until(lambda: self.has_run(sentinel_run(mark)), timeout, 0.05)
        self.cpu = ingest_cpu(self.pid) - cpu0
        return time.perf_counter() - start

    def metric(self, name: str) -> float:
        text = self.client.get(self.http + "/metrics").text
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else math.nan

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


class BareLoop:
    """A bare socket + ``msgpack.unpackb`` on the collector's core: the floor of any collector."""

    def __init__(self, core: int = COLLECTOR_CORE) -> None:
        kind = "router" if ROUTER else "pull"
        self.proc = subprocess.Popen([sys.executable, "-c", BARE_LOOP, kind],
                                     stdout=subprocess.PIPE, text=True,
                                     preexec_fn=pin(core))  # fmt: skip
        assert self.proc.stdout is not None
        self.listen = f"tcp://127.0.0.1:{int(self.proc.stdout.readline())}"

    def deliver(self, push: Pusher, frames: list[bytes]) -> tuple[float, dict[str, float]]:
        """Seconds until the bare loop read ``frames`` and a sentinel; its lag figures."""
        start_wall = time.time()
        push.send(frames)
        push.send([sentinel()])
        assert self.proc.stdout is not None
        done, n, p99, late, rss, cpu = map(float, self.proc.stdout.readline().split())
        figures = {"n": n, "lag_p99": p99, "late": late, "rss": rss, "cpu": cpu}
        return done - start_wall, figures

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def ingest_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (ingest workers), every thread (the bench's
    polls of ``/runs/<sentinel>`` every 50 ms included: ~1 % of a core)."""
    return sum(cpu_seconds(p) for p in [pid, *children(pid)])


def children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in found]


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else math.nan


def batch(ranks: list[Rank], frames: int) -> list[bytes]:
    """``frames`` stats frames, every rank's step n before any rank's step n+1."""
    out: list[bytes] = []
    step = 0
    while len(out) < frames:
        step += 1
        out += [r.stats(step, when=time.time()) for r in ranks]
    return out[:frames]
