"""Gradient and update rules: positive and negative cases."""

from __future__ import annotations

from tests.helpers.fake_rank import FakeRank, Harness

FC1 = "blocks.1.mlp.fc.weight"


def _run(h: Harness, r: FakeRank, steps: range, **kw: object) -> None:
    for step in steps:
        h.send(r.stats(step, **kw))  # type: ignore[arg-type]


def test_grad_explosion_fires_above_100_naming_the_largest_gradient() -> None:
    h, r = Harness("grad_explosion"), FakeRank()
    h.send(r.hello())
    _run(h, r, range(1, 5))
    h.send(r.stats(5, grad={FC1: 400.0}, metrics={"grad_norm": 400.0}))
    [alert] = h.firing("grad_explosion")
    assert FC1 in alert.message and alert.value == 400.0


def test_grad_explosion_fires_at_ten_times_the_running_median() -> None:
    h, r = Harness("grad_explosion"), FakeRank()
    h.send(r.hello())
    _run(h, r, range(1, 30))
    h.send(r.stats(30, metrics={"grad_norm": 15.0}))
    assert h.firing("grad_explosion")


def test_grad_explosion_silent_on_steady_norms() -> None:
    h, r = Harness("grad_explosion"), FakeRank()
    h.send(r.hello())
    for step in range(1, 100):
        h.send(r.stats(step, metrics={"grad_norm": 1.0 + (step % 7) / 2}))
    assert h.open() == []


def test_vanishing_gradients_fires_when_first_block_is_below_one_percent_of_last() -> None:
    h, r = Harness("vanishing_gradients"), FakeRank()
    h.send(r.hello())
    tiny = {n: 1e-4 for n in r.names if n.startswith("blocks.0.")}
    _run(h, r, range(1, 12), grad=tiny)
    assert h.firing("vanishing_gradients")


def test_vanishing_gradients_fires_on_a_vanished_global_norm_and_not_on_healthy_ones() -> None:
    h, r = Harness("vanishing_gradients"), FakeRank()
    h.send(r.hello())
    _run(h, r, range(1, 30))
    assert h.open() == []
    _run(h, r, range(30, 41), metrics={"grad_norm": 1e-9})
    assert h.firing("vanishing_gradients")


def test_frozen_parameters_fires_after_three_full_checks_with_nonzero_gradient() -> None:
    h, r = Harness("frozen_parameters"), FakeRank()
    h.send(r.hello())
    _run(h, r, range(1, 5), full=True)
    h.send(r.stats(5, ratio={FC1: 0.0}))
    h.send(r.stats(6, ratio={FC1: 0.0}))
    assert h.firing() == []
    h.send(r.stats(7, ratio={FC1: 0.0}))
    [alert] = h.firing("frozen_parameters")
    assert alert.parameter == FC1 and "for 3 checks while gradient non-zero" in alert.message


def test_frozen_parameters_blames_bf16_rounding_when_updates_underflow() -> None:
    h, r = Harness("frozen_parameters"), FakeRank()
    h.send(r.hello())
    ln = "blocks.0.ln1.weight"
    for step in range(1, 5):
        h.send(r.stats(step, ratio={ln: 0.0}, unchanged={ln: 1.0}, underflow={ln: 1.0}))
    [alert] = h.firing("frozen_parameters")
    assert alert.parameter == ln and "fp32 master weights" in alert.message


def test_frozen_parameters_ignores_zero_gradients_and_frozen_by_design() -> None:
    r = FakeRank(frozen_by_design=["tok_emb.weight"])
    h = Harness("frozen_parameters")
    h.send(r.hello())
    assert "tok_emb.weight" not in r.names
    _run(h, r, range(1, 10), ratio={FC1: 0.0}, grad={FC1: 0.0})
    _run(h, r, range(10, 20), full=True)
    assert h.open() == []


def test_update_ratio_high_fires_when_sustained_and_not_on_one_blip() -> None:
    h, r = Harness("update_ratio_high", warmup_steps=0), FakeRank()
    h.send(r.hello())
    h.send(r.stats(1, ratio={FC1: 0.5}))
    _run(h, r, range(2, 6), full=True)
    assert h.firing() == []
    _run(h, r, range(6, 9), ratio={FC1: 0.5})
    [alert] = h.firing("update_ratio_high")
    assert alert.parameter == FC1


def test_update_ratio_low_fires_below_1e7_but_leaves_zero_to_frozen() -> None:
    h, r = Harness("update_ratio_low"), FakeRank()
    h.send(r.hello())
    _run(h, r, range(1, 5), ratio={FC1: 0.0})
    assert h.open() == []
    _run(h, r, range(5, 8), ratio={FC1: 1e-9})
    [alert] = h.firing("update_ratio_low")
    assert alert.parameter == FC1


def test_weight_norm_spike_fires_on_a_tenfold_jump_only() -> None:
    h, r = Harness("weight_norm_spike"), FakeRank()
    h.send(r.hello())
    _run(h, r, range(1, 5), weight={FC1: 5.0})
    h.send(r.stats(5, weight={FC1: 9.0}))
    assert h.open() == []
    h.send(r.stats(6, weight={FC1: 95.0}))
    [alert] = h.firing("weight_norm_spike")
    assert alert.parameter == FC1


def test_dead_parameters_fires_after_the_window_of_missing_gradients() -> None:
    h, r = Harness("dead_parameters"), FakeRank()
    h.send(r.hello())
    _run(h, r, range(1, 10))
    _run(h, r, range(10, 17), nograd=[FC1])
    assert h.firing() == []
    h.send(r.stats(17, nograd=[FC1]))
    [alert] = h.firing("dead_parameters")
    assert alert.parameter == FC1


def test_dead_parameters_silent_for_parameters_that_never_had_gradients() -> None:
    h, r = Harness("dead_parameters"), FakeRank()
    h.send(r.hello())
    _run(h, r, range(1, 30), grad={FC1: 0.0})
    assert h.open() == []
