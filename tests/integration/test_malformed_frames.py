"""Hostile bytes on the collector's real socket: counted by reason, and the collector serves on."""

from __future__ import annotations

import re

import httpx
import msgpack
import zmq
from support import CollectorProcess, wait_until

from gradwatch import wire

GARBAGE = {
    "malformed": [b"\x00\x01garbage", b"\xdd\xff\xff\xff\xff", msgpack.packb([1, 2]), b""],
    "version": [msgpack.packb({"v": 99, "kind": "stats"})],
    "unknown_kind": [msgpack.packb({"v": 1, "kind": "gossip"})],
    "schema": [msgpack.packb({"v": 1, "kind": "bye", "run": 5, "rank": "zero"})],
    "no_hello": [wire.encode(wire.Heartbeat("ghost", 0, "feed", 1, 3, 1.0))],
}


def _rejected(collector: CollectorProcess) -> dict[str, float]:
    text = httpx.get(collector.http + "/metrics", timeout=10).text
    found = re.findall(r'^gradwatch_frames_rejected_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


def test_malformed_frames_are_counted_by_reason_and_the_collector_stays_healthy(
    collector: CollectorProcess,
) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(collector.listen)
    try:
        for frames in GARBAGE.values():
            for data in frames:
                sock.send(data)
    finally:
        sock.close()
        ctx.term()

    want = {reason: len(frames) for reason, frames in GARBAGE.items()}
    counts = wait_until(lambda: (c := _rejected(collector)) and all(
        c.get(r, 0) >= n for r, n in want.items()) and c, 20)  # fmt: skip
    assert {r: counts[r] for r in want} == want
    assert httpx.get(collector.http + "/healthz", timeout=10).status_code == 200
    assert collector.proc is not None and collector.proc.poll() is None
