"""A seeded fuzz of the collector's socket: 20,000+ malformed, hostile and extreme frames of
every kind, then the collector must still serve, its counters add up, /metrics parses and its
memory stays bounded."""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from gradwatch import wire
from gradwatch.wire import metrics as m
from tests.helpers.fake_rank import PARAMS, FakeRank
from tests.helpers.processes import CollectorProcess
from tests.helpers.waiting import wait_until

SEED = 20240611
FRAMES = 20_000
RSS_BOUND_MIB = 400
"""The collector's resident memory after the fuzz (it starts near 60 MiB; the limits below
bound what the fuzz can make it hold)."""
LIMITS = ("--max-runs", "40", "--max-ranks", "200", "--max-params", "64",
          "--max-open-alerts", "10")  # fmt: skip
EXTREMES = (1e308, -1e308, 5e-324, 0.0, -0.0, math.nan, math.inf, -math.inf, 3.4e38, 1e-300)
NASTY = ("\n2099-01-01 CRITICAL forged line", "\x1b[2J", "\u2028", "\x00", "é" * 300, "")
JUNK: tuple[Any, ...] = ("x", 2**63, -1, None, True, 1.5, math.nan, [], {}, b"\x00", "y" * 5000)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


class Fuzz:
    """Messages of every kind, drawn from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.live = [self.rank(f"fuzz{i}", i % 3) for i in range(8)]
        self.sent = 0
        self.used: Counter[str] = Counter()

    def rank(self, run: str, rank: int = 0, **kw: Any) -> FakeRank:
        """A fake rank whose session id comes from the seeded generator too."""
        r = FakeRank(run, rank, **kw)
        r.session = f"{self.rng.getrandbits(64):016x}"
        return r

    def valid(self) -> list[Any]:
        r = self.rng.choice(self.live)
        if self.rng.random() < 0.05:
            return [r.hello()]
        step = self.rng.randrange(1, 10_000)
        value = self.rng.choice(EXTREMES + (2.0, 2.1))
        return [
            r.stats(step, loss=value, lr=(self.rng.choice(EXTREMES + (1e-3,)),),
                    grad={r.names[0]: self.rng.choice(EXTREMES)}, full=self.rng.random() < 0.2,
                    metrics={m.MEMORY_ALLOCATED: value, m.TOKENS_PER_SECOND: value})
        ]  # fmt: skip

    def garbage(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(0, 512))

    def truncated(self) -> bytes:
        data = wire.encode(self.rng.choice(self.live).stats(1))
        return data[: self.rng.randrange(1, len(data))]

    def not_a_map(self) -> bytes:
        return _pack(self.rng.choice([[1, 2], 7, "text", None, 1.5, [{}]]))

    def version(self) -> bytes:
        obj = msgpack.unpackb(wire.encode(self.rng.choice(self.live).hello()))
        obj["v"] = self.rng.choice([0, 2, 99, "1", None])
        return _pack(obj)

    def unknown_kind(self) -> bytes:
        obj = msgpack.unpackb(wire.encode(self.rng.choice(self.live).stats(1)))
        obj["kind"] = self.rng.choice(["gossip", "", "HELLO", 3, None])
        return _pack(obj)

    def schema(self) -> bytes:
        r = self.rng.choice(self.live)
        frame = self.rng.choice([r.hello(), r.stats(2), r.heartbeat(3), r.bye(4)])
        obj = msgpack.unpackb(wire.encode(frame))
        key = self.rng.choice([k for k in obj if k not in ("v", "kind")])
        if self.rng.random() < 0.3:
            del obj[key]
        else:
            obj[key] = self.rng.choice(JUNK)
        return _pack(obj)

    def no_hello(self) -> bytes:
        return wire.encode(self.rank(f"ghost{self.rng.randrange(100)}").stats(1))

    def duplicate(self) -> bytes:
        r = self.rng.choice(self.live)
        return wire.encode(self.rank(r.run, r.rank).hello())

    def new_run(self) -> list[bytes]:
        """A hello and a NaN for a new run: beyond --max-runs these are refused."""
        r = self.rank(f"many{self.rng.randrange(10**9)}", self.rng.randrange(4))
        return [wire.encode(r.hello()), wire.encode(r.stats(1, loss=math.nan))]

    def too_big(self) -> bytes:
        params = [(f"p{i}.weight", (2,), "float32") for i in range(65)]
        return wire.encode(self.rank("wide", params=params).hello())

    def nasty_names(self) -> list[bytes]:
        name = "".join(self.rng.choice(NASTY) for _ in range(3)) or "x"
        r = self.rank(name[:200], params=[(name[:1000] or "p", (4,), "float32"), *PARAMS[1:]])
        return [wire.encode(r.hello()), wire.encode(r.stats(1, loss=math.nan))]

    def messages(self) -> Iterator[bytes]:
        kinds = [self.garbage, self.truncated, self.not_a_map, self.version, self.unknown_kind,
                 self.schema, self.schema, self.no_hello, self.duplicate, self.new_run,
                 self.too_big, self.nasty_names, self.valid, self.valid, self.valid]  # fmt: skip
        for r in self.live:
            yield wire.encode(r.hello())
        while self.sent < FRAMES:
            kind = self.rng.choice(kinds)
            self.used[kind.__name__] += 1
            got = kind()
            for item in got if isinstance(got, list) else [got]:
                yield item if isinstance(item, bytes) else wire.encode(item)
        for _ in range(2):  # above the decoder's 16 MiB: read and counted, not dropped unseen
            yield b"\x00" * (wire.MAX_FRAME_BYTES + 1024)


def _counters(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            key = sample.name + "".join(f"[{v}]" for v in sample.labels.values())
            out[key] = sample.value
    return out


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def test_fuzz_collector_survives_counts_everything_and_stays_bounded(tmp_path: Path) -> None:
    proc = CollectorProcess(tmp_path, *LIMITS).start()
    try:
        fuzz, ctx = Fuzz(SEED), zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.SNDHWM, 0)  # queue everything: the collector reads at its pace
        sock.setsockopt(zmq.LINGER, 60_000)
        sock.connect(proc.listen)
        for data in fuzz.messages():
            sock.send(data)
            fuzz.sent += 1
        sock.close()
        ctx.term()

        def counters() -> dict[str, float] | None:
            text = httpx.get(proc.http + "/metrics", timeout=30).text
            got = _counters(text)
            return got if got["gradwatch_messages_total"] >= fuzz.sent else None

        c = wait_until(counters, 120, interval=0.5)
        assert c["gradwatch_messages_total"] == fuzz.sent >= FRAMES
        received = sum(v for k, v in c.items() if k.startswith("gradwatch_frames_received_total["))
        rejected = {
            k.split("[")[1].rstrip("]"): v
            for k, v in c.items()
            if k.startswith("gradwatch_frames_rejected_total[")
        }
        assert received + sum(rejected.values()) == fuzz.sent
        for reason in ("malformed", "version", "unknown_kind", "schema", "no_hello",
                       "duplicate_rank", "max_runs", "max_params", "oversized"):  # fmt: skip
            assert rejected[reason] > 0, reason
        assert rejected["internal"] == 0
        assert not [k for k, v in c.items() if k.startswith("gradwatch_rule_errors") and v]
        assert httpx.get(proc.http + "/healthz", timeout=10).status_code == 200
        assert httpx.get(proc.http + "/runs", timeout=30).status_code == 200
        limits = [a for a in proc.alerts(rule="collector_limit")]
        assert {a["parameter"] for a in limits} >= {"max_runs", "max_params"}
        assert proc.proc is not None and _rss_mib(proc.proc.pid) < RSS_BOUND_MIB
        assert not any(line.startswith("2099") for line in proc.log().splitlines())
        if shutil.which("promtool"):
            text = httpx.get(proc.http + "/metrics", timeout=30).text
            check = subprocess.run(
                ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
            )
            assert check.returncode == 0, check.stdout + check.stderr
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzz_messages_cover_every_kind(seed: int) -> None:
    """The generator itself: seeded (the same bytes twice) and every kind present."""
    fuzz = Fuzz(seed)
    first = list(_limited(fuzz, 3000))
    assert first == list(_limited(Fuzz(seed), 3000))
    kinds = {name for name in dir(Fuzz) if callable(getattr(Fuzz, name))}
    kinds -= {"rank", "messages"} | {name for name in kinds if name.startswith("_")}
    assert set(fuzz.used) == kinds


def _limited(fuzz: Fuzz, n: int) -> Iterator[bytes]:
    for i, data in enumerate(fuzz.messages()):
        if i >= n:
            return
        fuzz.sent += 1
        yield data
