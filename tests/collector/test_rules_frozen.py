"""frozen_parameters names the cause at once: an lr of 0, requires_grad turned off, rounding,
or weights that do not move; and parameters that become trainable later are watched."""

from __future__ import annotations

from tests.helpers.fake_rank import PARAMS, FakeRank, Harness

FC1 = "blocks.1.mlp.fc.weight"
GROUPS = {n: 1 for n, _, _ in PARAMS if n.startswith("blocks.1.")}


def test_frozen_lr_exactly_zero_for_a_group_fires_at_once_naming_it() -> None:
    h, r = Harness("frozen_parameters"), FakeRank(groups=GROUPS)
    h.send(r.hello())
    for step in range(1, 30):
        h.send(r.stats(step, lr=(1e-3, 1e-3)))
    h.send(r.stats(30, lr=(1e-3, 0.0)))
    assert h.firing() == []  # one frame at 0 may be a schedule passing through it
    h.send(r.stats(31, lr=(1e-3, 0.0)))
    [alert] = h.firing("frozen_parameters")
    assert alert.first_step == 30 and alert.parameter in GROUPS
    assert "learning rate is exactly 0 for param group(s) [1]" in alert.message


def test_frozen_lr_zero_during_warmup_from_zero_is_not_a_freeze() -> None:
    h, r = Harness("frozen_parameters"), FakeRank(groups=GROUPS)
    h.send(r.hello())
    for step in range(1, 100):
        lr = 0.0 if step <= 3 else 1e-3 * min(1.0, step / 20)
        h.send(r.stats(step, lr=(lr, lr), full=step % 5 == 0))
    assert h.open() == []


def test_frozen_requires_grad_turned_off_mid_run_is_named_as_such() -> None:
    h, r = Harness("frozen_parameters"), FakeRank()
    h.send(r.hello())
    for step in range(1, 21):
        h.send(r.stats(step))
    r.set_trainable(FC1, False)
    h.send(r.hello())  # the agent re-announces its table
    h.send(r.stats(21))
    [alert] = h.firing("frozen_parameters")
    assert alert.parameter == FC1 and alert.first_step == 20 and alert.severity == "warning"
    assert "requires_grad turned off mid-run" in alert.message


def test_frozen_parameters_that_become_trainable_later_are_tracked() -> None:
    h, r = Harness("frozen_parameters"), FakeRank(frozen_by_design=[FC1])
    h.send(r.hello())
    for step in range(1, 11):
        h.send(r.stats(step, full=True))
    assert h.open() == []
    r.set_trainable(FC1, True)
    h.send(r.hello())
    for step in range(11, 20):
        h.send(r.stats(step, ratio={FC1: 0.0}))
    [alert] = h.firing("frozen_parameters")
    assert alert.parameter == FC1 and alert.first_step == 11
    assert "for 3 checks while gradient non-zero" in alert.message


def test_weight_norm_spike_ignores_a_one_element_bias_growing_fast() -> None:
    params = (*PARAMS, ("head.bias", (1,), "float32"))
    h, r = Harness("weight_norm_spike"), FakeRank(params=params)
    h.send(r.hello())
    h.send(r.stats(1, weight={"head.bias": 0.0056}))
    h.send(r.stats(2, weight={"head.bias": 0.0717}))  # 12.8x: normal early training
    assert h.open() == []
    h.send(r.stats(3, weight={FC1: 80.0, "head.bias": 0.0717}))
    [alert] = h.firing("weight_norm_spike")
    assert alert.parameter == FC1


def test_lr_sanity_silent_on_warm_restarts_and_on_a_freeze_to_zero() -> None:
    import math

    h, r = Harness("lr_sanity"), FakeRank()
    h.send(r.hello())
    for step in range(1, 400):
        t = (step - 30) % 100 if step > 30 else 0
        lr = 1e-3 * step / 30 if step <= 30 else 1e-5 + 1e-3 * (1 + math.cos(math.pi * t / 100)) / 2
        h.send(r.stats(step, lr=(lr if step < 350 else 0.0,)))
    assert h.open() == []


def test_lr_sanity_judges_a_cosine_seen_through_gaps_per_step() -> None:
    import math

    h, r = Harness("lr_sanity"), FakeRank()
    h.send(r.hello())
    for step in (*range(1, 60), 100, *range(101, 140)):  # frames 60..99 lost on the way
        h.send(r.stats(step, lr=(1e-5 + 1e-3 * (1 + math.cos(math.pi * step / 140)) / 2,)))
    assert h.open() == []
    h.send(r.stats(140, lr=(1e-2,)))  # a real 10x jump between consecutive steps
    assert h.firing("lr_sanity")
