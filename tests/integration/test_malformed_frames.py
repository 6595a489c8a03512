"""Hostile bytes on the collector's real socket: counted by reason, and the collector serves on."""

from __future__ import annotations

import re

import httpx
import msgpack
import zmq

from gradwatch import wire
from tests.helpers.processes import CollectorProcess
from tests.helpers.waiting import wait_until

GARBAGE = {
    "malformed": [b"\x00\x01garbage", b"\xdd\xff\xff\xff\xff", msgpack.packb([1, 2]), b""],
    "version": [msgpack.packb({"v": 99, "kind": "stats"})],
    "unknown_kind": [msgpack.packb({"v": 1, "kind": "gossip"})],
    "schema": [msgpack.packb({"v": 1, "kind": "bye", "run": 5, "rank": "zero"})],
    "no_hello": [wire.encode(wire.Heartbeat("ghost", 0, "feed", 1, 3, 1.0))],
}


def _rejected(collector_process: CollectorProcess) -> dict[str, float]:
    text = httpx.get(collector_process.http + "/metrics", timeout=10).text
    found = re.findall(r'^gradwatch_frames_rejected_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


def test_malformed_frames_are_counted_by_reason_and_the_collector_stays_healthy(
    collector_process: CollectorProcess,
) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(collector_process.listen)
    try:
        for frames in GARBAGE.values():
            for data in frames:
                sock.send(data)
    finally:
        sock.close()
        ctx.term()

    want = {reason: len(frames) for reason, frames in GARBAGE.items()}
    counts = wait_until(lambda: (c := _rejected(collector_process)) and all(
        c.get(r, 0) >= n for r, n in want.items()) and c, 20)  # fmt: skip
    assert {r: counts[r] for r in want} == want
    assert httpx.get(collector_process.http + "/healthz", timeout=10).status_code == 200
    assert collector_process.proc is not None and collector_process.proc.poll() is None
