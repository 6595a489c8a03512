"""End to end through the hooks: frames decoded from a real PULL socket."""

from __future__ import annotations

import math

import pytest
import torch

import gradwatch.agent as ga
from gradwatch import wire
from tests.helpers.frame_sink import FrameSink


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    m[0].bias.requires_grad_(False)  # frozen on purpose
    return m


def _train(
    m: torch.nn.Module,
    opt: torch.optim.Optimizer,
    mon: ga.Monitor,
    steps: int,
    log_before: bool = False,
) -> list[float]:
    losses = []
    for _ in range(steps):
        loss = m(torch.randn(3, 4)).pow(2).mean()
        loss.backward()
        if log_before:
            mon.log(loss=loss, tokens=12)
        opt.step()
        if not log_before:
            mon.log(loss=loss, tokens=12, samples=3)
        opt.zero_grad()
        losses.append(float(loss.detach()))
    return losses


def test_monitor_sends_hello_stats_and_bye_with_correct_rows(sink: FrameSink) -> None:
    m = _model()
    opt = torch.optim.SGD(
        [{"params": m[0].parameters(), "lr": 0.1}, {"params": m[2].parameters(), "lr": 0.01}]
    )
    grads: list[list[torch.Tensor]] = []
    opt.register_step_pre_hook(
        lambda o, a, k: grads.append([p.grad.clone() for p in m.parameters() if p.requires_grad])
    )
    weights: list[list[float]] = []
    opt.register_step_post_hook(
        lambda o, a, k: weights.append(
            [float(p.detach().norm()) for p in m.parameters() if p.requires_grad]
        )
    )
    with ga.watch(m, opt, run="t", endpoint=sink.endpoint, full_every=2) as mon:
        sink.drain(until=wire.Hello)
        losses = _train(m, opt, mon, 4)
    sink.drain(until=wire.Bye)
    hello = sink.of(wire.Hello)[0]
    assert isinstance(hello, wire.Hello)
    assert hello.optimizer == "SGD"
    assert [p.requires_grad for p in hello.params] == [True, False, True, True]
    assert [p.group for p in hello.params] == [0, 0, 1, 1]
    stats = [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]
    assert [s.step for s in stats] == [1, 2, 3, 4]
    for s, g, loss in zip(stats, grads, losses, strict=True):
        assert s.lr == (0.1, 0.01)
        assert s.loss is not None and math.isclose(s.loss, loss, rel_tol=1e-6)
        assert s.scalars["tokens"] == 12.0
        norms = wire.unpack_columns(wire.CHEAP_FIELDS, s.rows)["grad_norm"]
        assert norms == pytest.approx([float(x.norm()) for x in g], rel=1e-5)
        assert s.metrics["grad_norm"] == pytest.approx(
            math.sqrt(sum(float(x.pow(2).sum()) for x in g)), rel=1e-5
        )
        assert s.metrics["nonfinite_grads"] == 0.0
        assert bool(s.full) == (s.step % 2 == 0)
        assert "rss_bytes" in s.metrics and "memory_total_bytes" in s.metrics
    assert "grad_p50" in stats[1].metrics and "grad_p50" not in stats[0].metrics
    assert stats[1].metrics["tokens_per_second"] == pytest.approx(
        12 / stats[1].metrics["step_time_seconds"]
    )
    full = wire.unpack_columns(wire.FULL_FIELDS, stats[1].full)
    assert all(r > 0 for r in full["update_ratio"])
    assert full["weight_norm"] == pytest.approx(weights[1], rel=1e-5)  # after step 2
    bye = sink.of(wire.Bye)[0]
    assert isinstance(bye, wire.Bye) and bye.reason == "close" and bye.step == 4


def test_monitor_log_before_step_attaches_to_the_same_step(sink: FrameSink) -> None:
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    mon = ga.watch(m, opt, run="t", endpoint=sink.endpoint)
    sink.drain(until=wire.Hello)
    losses = _train(m, opt, mon, 3, log_before=True)
    mon.close()
    sink.drain(until=wire.Bye)
    got = [f.loss for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]
    assert got == pytest.approx(losses, rel=1e-6)


def test_monitor_every_n_samples_every_nth_step_and_lists_nograd(sink: FrameSink) -> None:
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    cfg = ga.AgentConfig(run="t", endpoint=sink.endpoint, every=3, full_every=6)
    mon = ga.Monitor(m, opt, cfg)
    sink.drain(until=wire.Hello)
    for _ in range(6):
        m(torch.randn(2, 4)).sum().backward()
        m[2].bias.grad = None  # tracked but without a gradient this step
        opt.step()
        opt.zero_grad()
    mon.close()
    sink.drain(until=wire.Bye)
    stats = [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]
    assert [s.step for s in stats] == [3, 6]
    assert all(s.nograd == (2,) for s in stats)
    assert wire.unpack_columns(wire.CHEAP_FIELDS, stats[0].rows)["grad_norm"][2] == 0.0


def test_monitor_hook_errors_are_counted_not_raised(sink: FrameSink) -> None:
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    mon = ga.watch(m, opt, run="t", endpoint=sink.endpoint)

    def boom(*a: object) -> None:
        raise RuntimeError("boom")

    mon._stats.norms = boom  # type: ignore[method-assign]
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    mon.log(loss="not a number")  # type: ignore[arg-type]
    mon.close()
    mon.close()  # idempotent
    assert mon.errors == 2 and mon.closed


def test_monitor_grad_scaler_reports_scale_and_skipped_steps(sink: FrameSink) -> None:
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1000)
    mon = ga.watch(m, opt, run="t", endpoint=sink.endpoint, scaler=scaler)
    sink.drain(until=wire.Hello)
    for i in range(4):
        loss = m(torch.randn(2, 4)).sum()
        if i == 1:
            loss = loss * float("inf")  # this step is skipped by the scaler
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    mon.close()
    sink.drain(until=wire.Bye)
    stats = [f for f in sink.of(wire.Stats) if isinstance(f, wire.Stats)]
    assert [s.metrics["grad_scale"] for s in stats] == [1024.0, 512.0, 512.0]
    assert [s.metrics["scaler_skipped_total"] for s in stats] == [0.0, 1.0, 1.0]


def test_monitor_config_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="every"):
        ga.AgentConfig(run="t", every=0)
    with pytest.raises(ValueError, match="rank"):
        ga.AgentConfig(run="t", rank=2, world_size=2)
    with pytest.raises(ValueError, match="endpoint"):
        ga.AgentConfig(run="t", endpoint="localhost")


def test_monitor_cast_to_bf16_mid_run_reannounces_table_and_reports_underflow(
    sink: FrameSink,
) -> None:
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(8)
    lin = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD([*lin.parameters(), norm.weight, norm.bias], lr=1e-5)
    model = torch.nn.ModuleDict({"lin": lin, "norm": norm})
    with ga.watch(model, opt, run="t", endpoint=sink.endpoint, full_every=2) as mon:
        sink.drain(until=wire.Hello)
        for step in range(6):
            if step == 2:  # seed 003: norm weights at 1.0 cast to bf16
                norm.weight.data = norm.weight.data.to(torch.bfloat16)
            x = torch.randn(4, 8)
            y = torch.nn.functional.layer_norm(lin(x), (8,), norm.weight.float(), norm.bias).pow(2)
            y.mean().backward()
            opt.step()
            mon.log(loss=y.mean())
            opt.zero_grad()
    sink.drain(until=wire.Bye)
    hellos = [h for h in sink.of(wire.Hello) if isinstance(h, wire.Hello)]
    dtypes = {p.name: p.dtype for p in hellos[-1].params}
    assert len(hellos) >= 2 and dtypes["norm.weight"] == "bfloat16"
    last = [s for s in sink.of(wire.Stats) if isinstance(s, wire.Stats) and s.full][-1]
    names = [p.name for p in hellos[-1].params if p.requires_grad]
    underflow_frac = wire.unpack_columns(wire.FULL_FIELDS, last.full)["underflow_frac"]
    underflow = dict(zip(names, underflow_frac, strict=True))
    # lr 1e-5 * |g| is far below half an ULP of bf16 at 1.0 (2**-8): every update rounds away.
    assert underflow["norm.weight"] == 1.0
    assert underflow["lin.weight"] == 0.0


def test_monitor_counts_nonfinite_elements_of_flagged_parameters_exactly(
    sink: FrameSink,
) -> None:
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    cfg = ga.AgentConfig(run="t", endpoint=sink.endpoint, flush_seconds=0.0)
    mon = ga.Monitor(m, opt, cfg)
    sink.drain(until=wire.Hello)

    def step(bad: int) -> None:
        for p in m.parameters():
            p.grad = torch.ones_like(p) if p.requires_grad else None
        m[2].weight.grad.view(-1)[:bad] = float("nan")  # type: ignore[union-attr]
        opt.step()

    step(3)  # flagged by its norm; its frame is sealed at the next step
    step(0)
    sink.drain(until=wire.Stats)  # built (and the flag seen) once it has arrived
    step(5)  # counted exactly
    mon.close()
    sink.drain(until=wire.Bye)
    stats = {s.step: s for s in sink.of(wire.Stats) if isinstance(s, wire.Stats)}
    row = 1  # tracked rows: 0.weight, 2.weight, 2.bias
    assert stats[1].metrics["nonfinite_grads"] == 1.0 and stats[1].nonfinite == ()
    assert math.isnan(wire.unpack_columns(wire.CHEAP_FIELDS, stats[1].rows)["grad_norm"][row])
    assert stats[3].nonfinite == ((row, 5),)
    assert stats[2].metrics["nonfinite_grads"] == 0.0


def test_monitor_watch_takes_its_defaults_from_agent_config(
    sink: FrameSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import inspect

    # watch() restates no default: its signature shows every AgentConfig setting with the
    # AgentConfig default (derived), its own parameters default to None.
    params = inspect.signature(ga.watch).parameters
    fields = {f.name for f in dataclasses.fields(ga.AgentConfig)} - {"run", "endpoint"}
    fields -= {"rank", "world_size"}  # from torch.distributed or the environment
    assert fields <= set(params)
    for name, p in params.items():
        expected = ga.AgentConfig.default(name) if name in fields else None
        assert p.default is p.empty or p.default == expected, name
    monkeypatch.setenv("GRADWATCH_ENDPOINT", sink.endpoint)
    monkeypatch.setenv("GRADWATCH_RUN", "from-env")
    m = _model()
    mon = ga.watch(m, torch.optim.SGD(m.parameters(), lr=0.1), heartbeat_seconds=2.5)
    mon.close()
    cfg = mon.config
    assert (cfg.run, cfg.endpoint, cfg.heartbeat_seconds) == ("from-env", sink.endpoint, 2.5)
    for name in ("every", "full_every", "sample_size", "flops_per_token"):
        assert getattr(cfg, name) == ga.AgentConfig.default(name)
    assert ga.AgentConfig.default("endpoint") == "tcp://127.0.0.1:5555"
    with pytest.raises(KeyError, match="run"):
        ga.AgentConfig.default("run")
    with pytest.raises(TypeError, match="ful_every"):
        ga.watch(m, torch.optim.SGD(m.parameters(), lr=0.1), ful_every=3)
