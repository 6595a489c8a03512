"""The collector's back channel: which alerts go back, to whom, with what policy and step."""

from __future__ import annotations

import math

import pytest

from gradwatch import wire
from gradwatch.collector.rules import RulesError, build_rules
from tests.helpers.fake_rank import FakeRank, Harness, job

FC = "blocks.0.mlp.fc.weight"


def _told(h: Harness) -> list[tuple[bytes, wire.Action]]:
    out: list[tuple[bytes, wire.Action]] = []
    h.core.back.send_due(lambda who, payload: out.append((who, wire.decode_action(payload))))
    return out


def _learn(h: Harness, ranks: list[FakeRank]) -> None:
    for r in ranks:
        h.core.back.learn(f"peer{r.rank}".encode(), r.hello())


def test_back_channel_tells_every_rank_of_the_run_once_with_the_rule_policy() -> None:
    h = Harness("non_finite", action="stop")
    ranks = job(2, "r")
    for r in ranks:
        h.send(r.hello())
    _learn(h, ranks)
    other = FakeRank("other")
    h.send(other.hello())
    h.core.back.learn(b"other", other.hello())
    h.step(ranks, 1)
    assert _told(h) == []  # nothing fired
    h.step(ranks, 2, grad={FC: math.nan})
    told = _told(h)
    assert sorted(who for who, _ in told) == [b"peer0", b"peer1"]  # not run "other"
    action = told[0][1]
    assert (action.rule, action.action, action.run, action.step) == ("non_finite", "stop", "r", 2)
    assert action.at_step > 2  # two ranks: a common step ahead of the furthest
    h.step(ranks, 3, grad={FC: math.nan})
    assert _told(h) == []  # the same alert is not sent again


def test_back_channel_single_rank_acts_at_once_and_notify_is_the_default() -> None:
    h = Harness("non_finite")
    r = FakeRank("solo")
    h.send(r.hello())
    h.core.back.learn(b"solo", r.hello())
    h.send(r.stats(1))
    h.send(r.stats(2, loss=math.nan))
    [(who, action)] = _told(h)
    assert who == b"solo" and action.action == "notify" and action.at_step == 0


def test_back_channel_lead_covers_the_configured_seconds_of_steps() -> None:
    h = Harness("non_finite")
    h.core.back.lead_seconds = 2.0
    ranks = job(2, "r")
    for r in ranks:
        h.send(r.hello())
    _learn(h, ranks)
    h.step(ranks, 10, metrics={"step_time_seconds": 0.1})
    h.step(ranks, 11, metrics={"step_time_seconds": 0.1}, grad={FC: math.nan})
    [(_, action), _] = _told(h)
    assert action.at_step == 11 + 20


def test_back_channel_rule_action_is_validated() -> None:
    with pytest.raises(RulesError, match="action"):
        build_rules({"non_finite": {"action": "halt"}})
