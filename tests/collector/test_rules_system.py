"""lr_sanity and the system rules: positive and negative cases."""

from __future__ import annotations

from tests.helpers.fake_rank import FakeRank, Harness

MiB = 2**20


def test_lr_sanity_fires_on_muon_with_an_adamw_learning_rate() -> None:
    h, r = Harness("lr_sanity"), FakeRank(optimizer="Muon")
    h.send(r.hello())
    for step in range(1, 20):
        h.send(r.stats(step, lr=(3e-4,)))
    [alert] = h.firing("lr_sanity")
    assert alert.severity == "error" and "Muon" in alert.message


def test_lr_sanity_fires_on_a_100x_drop_and_stays_silent_through_warmup_and_cosine() -> None:
    import math

    h, r = Harness("lr_sanity"), FakeRank()
    h.send(r.hello())
    peak, warm, total = 1e-3, 20, 300
    for step in range(1, total + 1):
        if step <= warm:
            lr = peak * step / warm
        else:
            lr = peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
        h.send(r.stats(step, lr=(lr,)))
    assert h.open() == []
    h2, r2 = Harness("lr_sanity"), FakeRank()
    h2.send(r2.hello())
    for step in range(1, 40):
        h2.send(r2.stats(step, lr=(1e-3 if step < 30 else 1e-5,)))
    [alert] = h2.book.alerts()
    assert alert.step == 30 and "changed" in alert.message


def test_lr_sanity_fires_on_adamw_above_1e2() -> None:
    h, r = Harness("lr_sanity"), FakeRank()
    h.send(r.hello())
    for step in range(1, 12):
        h.send(r.stats(step, lr=(0.05,)))
    assert h.firing("lr_sanity")


def test_throughput_drop_and_step_time_increase_fire_when_sustained() -> None:
    slow = {"tokens_per_second": 300.0, "step_time_seconds": 0.3}
    for rule in ("throughput_drop", "step_time_increase"):
        h, r = Harness(rule, for_seconds=10.0, for_steps=5), FakeRank()
        h.send(r.hello())
        for step in range(1, 30):
            h.send(r.stats(step))
        h.send(r.stats(30, metrics=slow))
        assert h.firing() == []  # one slow step is not a trend
        for step in range(31, 43):
            h.send(r.stats(step, metrics=slow))
        assert h.firing() == [], "seen at step 33, it has not held 10 s yet"
        for step in range(43, 46):
            h.send(r.stats(step, metrics=slow))
        [alert] = h.firing(rule)
        assert alert.first_step == 30 and alert.history[0][0] == 43, rule  # onset; reported


def test_slowdowns_of_tiny_steps_on_a_busy_machine_are_not_trends() -> None:
    """Steps of 10 ms, a 30-step hiccup at 3x: 0.9 s of slowness, far under a minute."""
    for rule in ("throughput_drop", "step_time_increase"):
        h, r = Harness(rule), FakeRank()
        h.send(r.hello())
        t = 0.0
        for step in range(1, 300):
            dt = 0.03 if 100 <= step < 130 else 0.01
            t += dt
            tps = 1000.0 * 0.01 / dt
            metrics = {"tokens_per_second": tps, "step_time_seconds": dt + 0.02}
            h.send(r.stats(step, metrics=metrics, time=t))
        assert h.open() == [], rule


def test_throughput_silent_on_jitter() -> None:
    h = Harness("throughput_drop")
    r = FakeRank()
    h.send(r.hello())
    for step in range(1, 200):
        tps = 1000.0 * (0.7 + 0.6 * ((step * 13) % 10) / 10)
        h.send(r.stats(step, metrics={"tokens_per_second": tps, "step_time_seconds": 0.1}))
    assert h.open() == []


def test_memory_pressure_fires_above_95_percent_only() -> None:
    h, r = Harness("memory_pressure"), FakeRank()
    h.send(r.hello())
    total = 80e9
    for step in range(1, 10):
        h.send(
            r.stats(
                step, metrics={"memory_allocated_bytes": 0.9 * total, "memory_total_bytes": total}
            )
        )
    assert h.open() == []
    for step in range(10, 13):
        h.send(
            r.stats(
                step, metrics={"memory_allocated_bytes": 0.97 * total, "memory_total_bytes": total}
            )
        )
    assert h.firing("memory_pressure")


def test_memory_growth_fires_on_a_4mib_per_step_leak_not_on_a_flat_rss() -> None:
    h, r = Harness("memory_growth", for_seconds=0.0, for_steps=0), FakeRank()
    h.send(r.hello())
    for step in range(1, 60):
        h.send(r.stats(step, metrics={"rss_bytes": 400 * MiB + (step % 3) * MiB}))
    assert h.open() == []
    for step in range(60, 72):
        h.send(r.stats(step, metrics={"rss_bytes": 400 * MiB + (step - 59) * 4 * MiB}))
    [alert] = h.firing("memory_growth")
    assert alert.history[0][0] <= 69  # within 10 steps of onset (step 60)
    assert 59 <= alert.first_step <= 61


def test_memory_growth_waits_for_the_leak_to_last_and_ignores_one_allocator_jump() -> None:
    h, r = Harness("memory_growth"), FakeRank()  # defaults: 60 s and 20 steps
    h.send(r.hello())
    for step in range(1, 100):  # one 64 MiB jump at step 50, then a plateau
        h.send(r.stats(step, metrics={"rss_bytes": (400 + 64 * (step >= 50)) * MiB}))
    assert h.open() == []
    for step in range(100, 200):
        h.send(r.stats(step, metrics={"rss_bytes": 464 * MiB + (step - 99) * 4 * MiB}))
    [alert] = h.firing("memory_growth")
    assert alert.history[0][0] >= 100 + 60 and 99 <= alert.first_step <= 101


def test_trainer_silent_fires_on_the_tick_and_resolves_when_frames_resume() -> None:
    h, r = Harness("trainer_silent", floor_seconds=3.0), FakeRank()
    h.send(r.hello())
    for step in range(1, 6):
        h.send(r.stats(step), dt=0.1)
    h.tick(2.0)
    assert h.firing() == []
    h.tick(2.0)
    [alert] = h.firing("trainer_silent")
    assert alert.step == 5
    h.send(r.stats(6), dt=0.1)
    h.tick(0.1)
    assert h.firing() == [] and h.book.alerts("resolved")


def test_trainer_silent_ignores_ranks_that_said_bye() -> None:
    h, r = Harness("trainer_silent", floor_seconds=3.0), FakeRank()
    h.send(r.hello())
    h.send(r.stats(1))
    h.send(r.bye(1))
    h.tick(100.0)
    assert h.open() == []
