"""non_finite, loss_spike, loss_plateau, val_divergence: positive and negative cases."""

from __future__ import annotations

import math

from tests.helpers.fake_rank import FakeRank, Harness


def test_non_finite_fires_on_the_same_step_naming_the_first_parameter() -> None:
    h, r = Harness("non_finite"), FakeRank()
    h.send(r.hello())
    for step in range(1, 5):
        h.send(r.stats(step))
    assert h.firing() == []
    h.send(r.stats(5, grad={"blocks.1.mlp.fc.weight": math.nan, "head.weight": math.inf}))
    [alert] = h.firing("non_finite")
    assert alert.step == 5 and alert.severity == "critical"
    assert alert.parameter == "blocks.1.mlp.fc.weight"
    assert "head.weight" in alert.message
    # The agent counts a flagged parameter's NaN/Inf elements exactly on a later frame.
    fc = "blocks.1.mlp.fc.weight"
    h.send(r.stats(6, grad={fc: math.nan}, nonfinite={fc: 7}))
    [alert] = h.firing("non_finite")
    assert f"{fc} 7/{192 * 48}" in alert.message


def test_non_finite_nan_loss_alone_fires_without_parameter() -> None:
    h, r = Harness("non_finite"), FakeRank()
    h.send(r.hello())
    h.send(r.stats(1, loss=math.nan))
    [alert] = h.firing()
    assert alert.parameter is None and "loss is nan" in alert.message


def test_non_finite_silent_on_finite_values_and_missing_gradients() -> None:
    h, r = Harness("non_finite"), FakeRank()
    h.send(r.hello())
    for step in range(1, 20):
        h.send(r.stats(step, grad={"head.weight": math.nan}, nograd=["head.weight"]))
    assert h.open() == []


def test_loss_spike_fires_error_at_ten_times_the_moving_average() -> None:
    h, r = Harness("loss_spike"), FakeRank()
    h.send(r.hello())
    for step in range(1, 30):
        h.send(r.stats(step, loss=2.0 + 0.01 * (step % 3)))
    h.send(r.stats(30, loss=40.0))
    [alert] = h.firing("loss_spike")
    assert alert.severity == "error" and alert.step == 30


def test_loss_spike_zscore_is_a_warning_after_warmup() -> None:
    h, r = Harness("loss_spike"), FakeRank()
    h.send(r.hello())
    for step in range(1, 60):
        h.send(r.stats(step, loss=2.0 + 0.01 * (step % 5)))
    h.send(r.stats(60, loss=3.0))
    [alert] = h.firing("loss_spike")
    assert alert.severity == "warning"


def test_loss_spike_silent_on_a_noisy_falling_loss() -> None:
    h, r = Harness("loss_spike"), FakeRank()
    h.send(r.hello())
    for step in range(1, 300):
        h.send(r.stats(step, loss=5.0 * math.exp(-step / 100) + 0.1 * ((step * 7) % 5) / 5))
    assert h.open() == []


def test_loss_plateau_fires_when_the_loss_stops_improving() -> None:
    h, r = Harness("loss_plateau", window=10, lookback=50), FakeRank()
    h.send(r.hello())
    for step in range(1, 60):
        h.send(r.stats(step, loss=2.0 + 0.01 * (step % 2)))
    assert h.firing("loss_plateau")


def test_loss_plateau_silent_on_a_slowly_falling_300_step_run_with_defaults() -> None:
    h, r = Harness("loss_plateau"), FakeRank()
    h.send(r.hello())
    for step in range(1, 301):
        h.send(r.stats(step, loss=3.0 - 0.001 * step))
    assert h.open() == []


def test_val_divergence_fires_when_val_rises_while_train_falls() -> None:
    h, r = Harness("val_divergence"), FakeRank()
    h.send(r.hello())
    vals = [3.0, 2.5, 2.4, 2.6, 2.8, 3.0]
    for i, step in enumerate(range(1, 121)):
        val = vals[min(i // 20, len(vals) - 1)]
        h.send(r.stats(step, loss=3.0 - 0.02 * step, scalars={"val_loss": val}))
    [alert] = h.firing("val_divergence")
    assert alert.value == 3.0


def test_val_divergence_silent_when_both_fall() -> None:
    h, r = Harness("val_divergence"), FakeRank()
    h.send(r.hello())
    for step in range(1, 121):
        h.send(r.stats(step, loss=3.0 - 0.02 * step, scalars={"val_loss": 3.0 - step // 20 * 0.1}))
    assert h.open() == []
