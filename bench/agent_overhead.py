"""Step-time overhead of gradwatch vs. common alternatives on the demo GPT (CPU).

Variants are interleaved round-robin (one block of steps each per round) so machine noise
hits all of them alike. "floor" is not a tool: one fused norm over the gradients, the least
any per-parameter statistic costs. Run: .venv/bin/python bench/agent_overhead.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import torch
import zmq

import gradwatch.agent as ga
from gradwatch.trainer.model import GPT, GPTConfig


def _drain(sock: zmq.Socket[bytes], stop: threading.Event) -> None:
    while not stop.is_set():
        if sock.poll(50):
            sock.recv_multipart()


def _item_loop(model: torch.nn.Module, out: dict[str, float]) -> None:
    """seed 004 style: per-parameter norm/mean/std/max with .item() every step."""
    for name, p in model.named_parameters():
        if p.grad is not None:
            g = p.grad
            out[f"{name}/norm"] = g.norm().item()
            out[f"{name}/mean"] = g.mean().item()
            out[f"{name}/std"] = g.std().item()
            out[f"{name}/max"] = g.abs().max().item()


def _grad_read(model: torch.nn.Module) -> None:
    """The least any per-parameter statistic costs: one fused pass over every gradient."""
    torch._foreach_norm([p.grad for p in model.parameters() if p.grad is not None], 2)


PERIOD = 50  # the slow cadence of gradwatch's full statistics and of the TensorBoard variant


def _amortized_ms(samples: list[tuple[int, float]], period: int) -> float:
    """Mean over the phases ``step % period`` of the median time in each phase.

    Medians shed the outliers of a noisy machine; averaging the phases keeps a cost paid
    every ``period`` steps at its amortised 1/period weight.
    """
    phases: dict[int, list[float]] = {}
    for step, seconds in samples:
        phases.setdefault(step % period, []).append(seconds)
    return statistics.fmean(statistics.median(v) for v in phases.values()) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--block", type=int, default=1, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="sequences per step (trainer default)")
    ap.add_argument("--size", default="demo", help="trainer model preset: tiny, demo, small")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = GPTConfig.preset(a.size)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.ROUTER)
    endpoint = f"tcp://127.0.0.1:{pull.bind_to_random_port('tcp://127.0.0.1')}"
    stop = threading.Event()
    threading.Thread(target=_drain, args=(pull, stop), daemon=True).start()
    tmp = tempfile.TemporaryDirectory()
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp.name)

    variants: dict[str, tuple[GPT, torch.optim.Optimizer, Callable[[GPT, int], None]]] = {}

    def make(name: str, extra: Callable[[GPT, torch.optim.Optimizer], Callable[[GPT, int], None]]):
        model = GPT(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
        variants[name] = (model, opt, extra(model, opt))

    sink: dict[str, float] = {}
    monitors: list[ga.Monitor] = []

    def with_gradwatch(full_every: int) -> Callable[[GPT, torch.optim.Optimizer], Callable]:
        def attach(model: GPT, opt: torch.optim.Optimizer) -> Callable[[GPT, int], None]:
            mon = ga.watch(
                model, opt, run=f"bench{full_every}", endpoint=endpoint, full_every=full_every
            )
            monitors.append(mon)
            return lambda m, step: None

        return attach

    def tb_hist(m: GPT, step: int) -> None:
        if step % 50 == 0:
            for name, p in m.named_parameters():
                if p.grad is not None:
                    writer.add_histogram(name, p.grad, step)

    make("baseline", lambda m, o: lambda mm, s: None)
    make("gradwatch every step", with_gradwatch(10**9))
    make("gradwatch + full/50", with_gradwatch(50))
    make("floor: one grad read", lambda m, o: lambda mm, s: _grad_read(mm))
    make(".item() loop", lambda m, o: lambda mm, s: _item_loop(mm, sink))
    make("tensorboard hist/50", lambda m, o: tb_hist)

    x = torch.randint(0, cfg.vocab_size, (a.batch, cfg.block_size))
    y = torch.randint(0, cfg.vocab_size, (a.batch, cfg.block_size))
    # Per variant and step: the whole step, and the monitored segment (optimizer.step() with its
    # hooks + the per-step callback), where every variant's monitoring cost lives. The segment
    # is short, so its medians resolve differences far below the noise of a whole step.
    total: dict[str, list[float]] = {k: [] for k in variants}
    segment: dict[str, list[tuple[int, float]]] = {k: [] for k in variants}
    steps = {k: 0 for k in variants}
    for rnd in range(a.rounds + 1):  # round 0 warms up
        for name, (model, opt, after) in variants.items():
            for _ in range(a.block):
                t0 = time.perf_counter()
                _, loss = model(x, y)
                loss.backward()
                t1 = time.perf_counter()
                opt.step()
                after(model, steps[name])
                t2 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                steps[name] += 1
                if rnd:
                    total[name].append(t2 - t0)
                    segment[name].append((steps[name], t2 - t1))
    for mon in monitors:
        mon.close()
    stop.set()
    writer.close()

    step_ms = {k: statistics.median(v) * 1e3 for k, v in total.items()}
    seg_ms = {k: _amortized_ms(v, PERIOD) for k, v in segment.items()}
    base_step, base_seg = step_ms["baseline"], seg_ms["baseline"]
    cost = {k: seg_ms[k] - base_seg for k in variants}
    model0 = variants["baseline"][0]
    print(
        f"{a.size} GPT ({sum(p.numel() for p in model0.parameters()):,} params, "
        f"{len(list(model0.parameters()))} tensors), batch {a.batch}x{cfg.block_size}, "
        f"threads {a.threads}, {a.rounds} rounds x {a.block} steps per variant, interleaved"
    )
    print(f"{'variant':<24}{'step ms':>9}{'vs base':>9}{'cost ms/step':>14}{'cost %':>8}")
    for k in variants:
        print(
            f"{k:<24}{step_ms[k]:>9.2f}{(step_ms[k] - base_step) / base_step * 100:>8.2f}%"
            f"{cost[k]:>14.3f}{cost[k] / base_step * 100:>7.2f}%"
        )
    ratio = cost[".item() loop"] / max(cost["gradwatch every step"], 1e-6)
    print(
        f"cost = optimizer.step + callback, amortised over {PERIOD} steps (mean of per-phase "
        "medians), minus the baseline's, as % of the median baseline step"
    )
    print(f"the .item() loop costs {ratio:.1f}x as much as gradwatch every step")
    print(
        f"frames dropped: {[m.dropped for m in monitors]}, errors: {[m.errors for m in monitors]}"
    )


if __name__ == "__main__":
    main()
