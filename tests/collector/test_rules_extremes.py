"""Every rule handles float32/float64 extremes, and one rule raising never stops the others."""

from __future__ import annotations

import logging
import math
import random

import pytest

from gradwatch import wire
from gradwatch.wire import metrics as m
from tests.helpers.fake_rank import FakeRank, Harness

F64 = (1e308, -1e308, 1.7976931348623157e308, 5e-324, -5e-324, 0.0, -0.0, 1e-300, 1.0, 2.0,
       math.nan, math.inf, -math.inf)  # fmt: skip
F32 = (3.4028234663852886e38, -3.4028234663852886e38, 1.4e-45, 0.0, -0.0, 1e30, 1.0,
       math.nan, math.inf, -math.inf)  # fmt: skip


def _series(rng: random.Random, n: int, pool: tuple[float, ...]) -> list[float]:
    """A random shape (constant, rising, falling, alternating, a jump, noise) of extremes."""
    a, b = rng.choice(pool), rng.choice(pool)
    shape = rng.choice(["const", "up", "down", "alt", "jump", "noise"])
    if shape == "const":
        return [a] * n
    if shape == "up":
        return [a * (1 + i) for i in range(n)]
    if shape == "down":
        return [a / (1 + i) for i in range(n)]
    if shape == "alt":
        return [a if i % 2 else b for i in range(n)]
    if shape == "jump":
        return [a] * (n // 2) + [b] * (n - n // 2)
    return [rng.choice(pool) for _ in range(n)]


def test_rules_never_raise_on_extreme_values() -> None:
    rng, h = random.Random(20240611), Harness()
    for run in range(60):
        r, n = FakeRank(f"extreme{run}"), 40
        h.send(r.hello())
        loss, lr, val = (_series(rng, n, F64) for _ in range(3))
        metrics = {k: _series(rng, n, F64) for k in wire.METRICS}
        cols = {c: {p: _series(rng, n, F32) for p in r.names} for c in "gwruf"}
        for i in range(n):
            h.send(
                r.stats(
                    i + 1, loss=loss[i], lr=(lr[i],), full=rng.random() < 0.3,
                    grad={p: cols["g"][p][i] for p in r.names},
                    weight={p: cols["w"][p][i] for p in r.names},
                    ratio={p: cols["r"][p][i] for p in r.names},
                    unchanged={p: cols["u"][p][i] for p in r.names},
                    underflow={p: cols["f"][p][i] for p in r.names},
                    metrics={k: v[i] for k, v in metrics.items()}, scalars={"val_loss": val[i]},
                )
            )  # fmt: skip
        h.tick(rng.choice([0.0, 1.0, 100.0, 1e6]))
    errors = {rule: n for rule, n in h.core.health.rule_errors.items() if n}
    assert errors == {}
    assert set(h.core.health.rule_errors) == {rule.name for rule in h.engine.rules}


def test_rules_a_huge_finite_loss_is_judged_and_later_rules_still_run() -> None:
    """1e308 used to overflow loss_spike's mean on every frame and skip every later rule."""
    h, r = Harness(), FakeRank("huge")
    h.send(r.hello())
    for step in range(1, 1200):
        h.send(r.stats(step, loss=1e308))
    h.send(r.stats(1200, loss=1e308, grad={"head.weight": math.nan}))
    assert h.core.health.rule_errors["loss_spike"] == 0
    assert h.core.health.rule_errors["loss_plateau"] == 0
    assert [a.parameter for a in h.firing("non_finite")] == ["head.weight"]
    assert h.firing("loss_plateau")  # 1e308 for 1,000 frames has not improved


def test_rules_memory_growth_from_zero_is_reported_not_divided_by() -> None:
    h, r = Harness("memory_growth", for_seconds=0.0, for_steps=0), FakeRank("leak")
    h.send(r.hello())
    for step in range(1, 40):
        h.send(r.stats(step, metrics={m.MEMORY_ALLOCATED: (step - 1) * 1e9}))
    assert h.core.health.rule_errors["memory_growth"] == 0
    [alert] = h.firing("memory_growth")
    assert "MiB" in alert.message


def test_rules_one_raising_rule_is_counted_and_the_others_still_judge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h, r = Harness(), FakeRank("bug")
    spike = next(rule for rule in h.engine.rules if rule.name == "loss_spike")

    def broken(*args: object) -> None:
        raise ZeroDivisionError("a rule bug")

    spike.check = broken  # type: ignore[method-assign]
    h.send(r.hello())
    with caplog.at_level(logging.ERROR):
        for step in range(1, 4):
            h.send(r.stats(step, loss=math.nan if step == 3 else 2.0))
    assert h.core.health.rule_errors["loss_spike"] == 3
    assert [a.step for a in h.firing("non_finite")] == [3]
    failures = [rec for rec in caplog.records if "rule loss_spike failed" in rec.getMessage()]
    assert len(failures) == 1  # a bounded rate: once a minute per rule, all of them counted
    assert "run bug rank 0 step 1" in failures[0].getMessage() and failures[0].exc_info
