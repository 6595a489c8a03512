"""Peers that lie, over the real socket of a collector process with default settings: nobody
learns a session id from the API, a second hello never takes a live rank over, and two
trainers with the same run name and rank are both reported while the first stays watched."""

from __future__ import annotations

import dataclasses
import math
import re

import httpx

from tests.helpers.fake_rank import FakeRank
from tests.helpers.processes import CollectorProcess
from tests.helpers.push import push
from tests.helpers.waiting import wait_until


def _rejected(proc: CollectorProcess, reason: str) -> float:
    text = httpx.get(proc.http + "/metrics", timeout=10).text
    found = re.search(rf'^gradwatch_frames_rejected_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_hostile_peer_cannot_forge_hijack_or_end_a_run(collector_process: CollectorProcess) -> None:
    proc = collector_process
    real = FakeRank("victim")
    push(proc.listen, [real.hello(), real.stats(1)])
    rank = wait_until(lambda: (runs := proc.get("/runs")["runs"]) and runs[0]["ranks"][0])
    assert rank["session"] == ""  # the API does not hand out what a forger needs

    thief = FakeRank("victim")
    thief_hello = dataclasses.replace(thief.hello(), host="attacker", pid=666)
    guessed = FakeRank("victim")  # no session id to copy: a forger can only guess one
    forged = [guessed.stats(1_000_000, loss=math.nan), guessed.bye(1_000_000)]
    push(proc.listen, [thief_hello, thief.stats(5, loss=math.nan), *forged])
    wait_until(lambda: _rejected(proc, "no_hello") >= 2)
    push(proc.listen, [real.stats(s) for s in range(2, 32)])  # the real trainer carries on

    wait_until(lambda: proc.get("/runs")["runs"][0]["ranks"][0]["last_step"] == 31)
    [rank] = proc.get("/runs")["runs"][0]["ranks"]
    assert rank["host"] == "testhost" and not rank["ended"] and rank["frames"] == 32
    assert _rejected(proc, "duplicate_rank") == 2  # the hijacking hello and its NaN
    alert = proc.wait_for_alert("duplicate_rank")
    assert "attacker pid 666" in alert["message"] and "testhost pid 1" in alert["message"]
    assert [a["rule"] for a in proc.alerts()] == ["duplicate_rank"]  # no forged non_finite


def test_two_trainers_with_one_run_name_are_reported_and_the_first_stays_watched(
    collector_process: CollectorProcess,
) -> None:
    proc = collector_process
    first = FakeRank("reused")
    second = FakeRank("reused")
    second_hello = dataclasses.replace(second.hello(), host="node-b", pid=4242)
    push(proc.listen, [first.hello(), *(first.stats(s) for s in range(1, 40))])
    wait_until(lambda: (runs := proc.get("/runs")["runs"]) and runs[0]["ranks"][0]["frames"] == 40)
    push(proc.listen, [second_hello, *(second.stats(s) for s in range(1, 10))])
    wait_until(lambda: _rejected(proc, "duplicate_rank") == 10)  # its hello and every frame
    push(proc.listen, [*(first.stats(s) for s in range(40, 60)), first.stats(60, loss=math.nan)])
    alert = proc.wait_for_alert("non_finite", run="reused")
    assert alert["first_step"] == 60
    duplicate = proc.wait_for_alert("duplicate_rank", run="reused")
    assert "node-b pid 4242" in duplicate["message"] and "refused" in duplicate["message"]
    [rank] = proc.get("/runs")["runs"][0]["ranks"]
    assert rank["last_step"] == 60 and rank["frames"] == 61
