"""Step-time overhead of gradwatch vs. common alternatives on the demo GPT (CPU).

Variants are interleaved round-robin (one block of steps each per round) so machine noise
hits all of them alike. Run: .venv/bin/python bench/agent_overhead.py [--rounds N]
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
            sock.recv()


def _item_loop(model: torch.nn.Module, out: dict[str, float]) -> None:
    """seed 004 style: per-parameter norm/mean/std/max with .item() every step."""
    for name, p in model.named_parameters():
        if p.grad is not None:
            g = p.grad
            out[f"{name}/norm"] = g.norm().item()
            out[f"{name}/mean"] = g.mean().item()
            out[f"{name}/std"] = g.std().item()
            out[f"{name}/max"] = g.abs().max().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--block", type=int, default=1, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = GPTConfig.preset("demo")
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
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
    make(".item() loop", lambda m, o: lambda mm, s: _item_loop(mm, sink))
    make("tensorboard hist/50", lambda m, o: tb_hist)

    x = torch.randint(0, cfg.vocab_size, (a.batch, cfg.block_size))
    y = torch.randint(0, cfg.vocab_size, (a.batch, cfg.block_size))
    times: dict[str, list[float]] = {k: [] for k in variants}
    steps = {k: 0 for k in variants}
    for rnd in range(a.rounds + 1):  # round 0 warms up
        for name, (model, opt, after) in variants.items():
            for _ in range(a.block):
                t0 = time.perf_counter()
                _, loss = model(x, y)
                loss.backward()
                opt.step()
                after(model, steps[name])
                opt.zero_grad(set_to_none=True)
                steps[name] += 1
                if rnd:
                    times[name].append(time.perf_counter() - t0)
    # Direct cost of the hook bodies on the training thread (robust to machine noise).
    model, opt, _ = variants["gradwatch + full/50"]
    _, loss = model(x, y)
    loss.backward()
    mon = monitors[1]
    hook_ms: dict[str, float] = {}
    for label, full in (("cheap", False), ("full", True)):
        samples = []
        for _ in range(60):
            t0 = time.perf_counter()
            mon._pre_hook(opt, (), {})
            if full:
                mon._sampler.before_step()
                mon._full_now = True
            mon._post_hook(opt, (), {})
            samples.append(time.perf_counter() - t0)
        hook_ms[label] = statistics.median(samples) * 1e3
    for mon in monitors:
        mon.close()
    stop.set()
    writer.close()

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    base = med["baseline"]
    print(
        f"demo GPT ({sum(p.numel() for p in variants['baseline'][0].parameters())} params, "
        f"{len(list(variants['baseline'][0].parameters()))} tensors), batch {a.batch}, "
        f"threads {a.threads}, {a.rounds} rounds x {a.block} steps per variant"
    )
    print(f"{'variant':<24}{'median ms':>10}{'overhead':>10}")
    for k, v in med.items():
        print(f"{k:<24}{v:>10.3f}{(v - base) / base * 100:>9.2f}%")
    gw = med["gradwatch every step"] - base
    it = med[".item() loop"] - base
    ratio = it / gw if gw > 0 else float("inf")
    print(f".item() loop overhead / gradwatch every-step overhead: {ratio:.1f}x")
    print(
        f"hook bodies per step (median): cheap {hook_ms['cheap']:.3f} ms, "
        f"full {hook_ms['full']:.3f} ms = {hook_ms['cheap'] / base * 100:.2f}% / "
        f"{hook_ms['full'] / base * 100:.2f}% of a baseline step"
    )
    print(
        f"frames dropped: {[m.dropped for m in monitors]}, errors: {[m.errors for m in monitors]}"
    )


if __name__ == "__main__":
    main()
