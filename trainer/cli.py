"""Command line of the demo trainer: ``python -m gradwatch.trainer --help``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from torch.distributed.elastic.multiprocessing.errors import record

from gradwatch.trainer.distributed import detect
from gradwatch.trainer.faults import KINDS, Injection, parse_injection
from gradwatch.trainer.injector import memory_capacity
from gradwatch.trainer.model import PRESETS
from gradwatch.trainer.optim import DEFAULT_LR, DEFAULT_WARMUP, OPTIMIZERS
from gradwatch.trainer.train import Stop, train

__all__ = ["DEFAULT_RUN", "RUN_ENV", "build_parser", "parse_args", "main"]

DEFAULT_RUN = "demo"
"""Run name when neither ``--run-name`` nor env ``GRADWATCH_RUN`` gives one."""
RUN_ENV = "GRADWATCH_RUN"


def _injection(text: str) -> Injection:
    try:
        return parse_injection(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {n}")
    return n


def _non_negative(text: str) -> int:
    n = int(text) if text.lstrip("-").isdigit() else -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The trainer's argument parser (help on every flag)."""
    kinds = "\n".join(f"  {k:12s} {v}" for k, v in KINDS.items())
    p = argparse.ArgumentParser(
        prog="python -m gradwatch.trainer",
        description="Train a small byte-level GPT on the shipped corpus, watched by gradwatch.",
        epilog="fault kinds for --inject KIND@STEP[:rank=R] (steps count from 1; without a "
        f"rank, every rank):\n{kinds}\n\nunder torchrun: torchrun --nproc-per-node 2 -m "
        "gradwatch.trainer --run-name NAME ... (DDP: gloo on CPU, NCCL on CUDA)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run = p.add_argument_group("run")
    run.add_argument("--steps", type=_positive, default=500, help="optimizer steps to run")
    run.add_argument(
        "--size", choices=sorted(PRESETS), default="demo", help="model preset (default demo)"
    )
    run.add_argument("--batch-size", type=_positive, default=16, help="sequences per step")
    run.add_argument("--seed", type=int, default=1337, help="seed for init and batch sampling")
    run.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="torch.set_num_threads (default: torch's default, the number of cores)",
    )
    opt = p.add_argument_group("optimization")
    opt.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="adamw",
        help="adamw; muon (torch.optim.Muon on hidden matrices + AdamW on the rest, one "
        "optimizer); sgd (momentum 0.9)",
    )
    opt.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default per optimizer: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
        + "; for muon it applies to the hidden matrices)",
    )
    opt.add_argument(
        "--aux-lr",
        type=float,
        default=3e-3,
        help="AdamW lr for embeddings, norms and head under --optimizer muon",
    )
    opt.add_argument(
        "--warmup",
        type=_non_negative,
        default=None,
        help="linear warmup steps (default per optimizer: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_WARMUP.items())
        + ")",
    )
    opt.add_argument("--weight-decay", type=float, default=0.1, help="decay of >= 2-D weights")
    opt.add_argument(
        "--grad-clip",
        type=float,
        default=1e3,
        help="clip the global grad norm at this value (0: off). The high default never "
        "touches a healthy run (norm ~0.1-10) and keeps exploding norms visible to the "
        "monitor, which reads gradients after clipping",
    )
    # Flags must not be prefixes of torchrun's own options (torchrun parses the whole line):
    # "--run" would be ambiguous with its --run-path. Defaults left None are the agent's.
    mon = p.add_argument_group("monitoring")
    mon.add_argument(
        "--endpoint",
        default=None,
        help="gradwatch collector endpoint (ZMQ), e.g. tcp://127.0.0.1:5555 (default: env "
        "GRADWATCH_ENDPOINT, else the agent's DEFAULT_ENDPOINT)",
    )
    mon.add_argument(
        "--run-name",
        default=None,
        help=f"run name shown by the collector (default: env {RUN_ENV}, else {DEFAULT_RUN!r})",
    )
    mon.add_argument("--run", dest="run_name", help=argparse.SUPPRESS)  # old alias, not torchrun
    mon.add_argument(
        "--every",
        type=_positive,
        default=None,
        help="monitor: stats every N steps (default: the agent's, AgentConfig.every)",
    )
    mon.add_argument(
        "--full-every",
        type=_positive,
        default=None,
        help="monitor: full per-parameter stats every N steps (default: the agent's, "
        "AgentConfig.full_every)",
    )
    mon.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=None,
        help="monitor: seconds between heartbeats (default: the agent's, "
        "AgentConfig.heartbeat_seconds)",
    )
    mon.add_argument(
        "--stall-seconds",
        type=float,
        default=None,
        help="monitor: heartbeats carry the training thread's stack once no step has completed "
        "for this long (default: the agent's, AgentConfig.stall_seconds)",
    )
    mon.add_argument(
        "--peak-flops",
        type=float,
        default=None,
        help="device peak FLOP/s, for the monitor's MFU (e.g. 2e11 for two CPU cores)",
    )
    mon.add_argument(
        "--memory-limit",
        type=_positive,
        default=None,
        metavar="BYTES",
        help="memory capacity: mem_pressure fills up to it, and the monitor reports it as the "
        "total (where the agent takes memory_limit_bytes; default: the host's RAM, or the "
        "CUDA device's memory)",
    )
    mon.add_argument("--no-monitor", action="store_true", help="train without gradwatch")
    mon.add_argument(
        "--inject",
        type=_injection,
        action="append",
        default=[],
        metavar="KIND@STEP[:rank=R]",
        help=f"inject a fault at STEP (repeatable), on rank R only if given; KIND is one of "
        f"{', '.join(KINDS)}",
    )
    log = p.add_argument_group("logging")
    log.add_argument("--log-every", type=_positive, default=10, help="print a step line every N")
    log.add_argument(
        "--eval-every",
        type=_non_negative,
        default=100,
        help="compute val_loss every N steps (0: never)",
    )
    log.add_argument("--eval-iters", type=_positive, default=8, help="batches per val_loss")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the arguments (errors exit with argparse's usage message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.run_name = args.run_name or os.environ.get(RUN_ENV) or DEFAULT_RUN
    try:
        where = detect()
    except ValueError as e:
        parser.error(f"torchrun environment: {e}")
    world_size, launched = where.world_size, where.launched
    for inj in args.inject:
        if inj.step > args.steps:
            parser.error(f"argument --inject: {inj} is after the last step ({args.steps})")
        if inj.rank is not None and inj.rank >= world_size:
            parser.error(f"argument --inject: {inj} names rank {inj.rank} of {world_size}")
        if inj.kind == "mem_pressure":
            if args.memory_limit is None:
                parser.error(f"argument --inject: {inj} needs --memory-limit BYTES")
            capacity = memory_capacity(where.device)
            if args.memory_limit > capacity:  # filling it would take the machine down
                parser.error(
                    f"argument --memory-limit: {args.memory_limit} bytes is more than this "
                    f"{where.device.type} memory ({capacity:.0f} bytes)"
                )
        if inj.kind == "bf16" and launched:  # DDP's buckets cannot change a parameter's dtype
            parser.error(f"argument --inject: {inj} does not work under torchrun (DDP)")
    if args.warmup is None:
        args.warmup = DEFAULT_WARMUP[args.optimizer]
    if args.lr is not None and args.lr <= 0:
        parser.error(f"argument --lr: must be > 0, got {args.lr}")
    for name in ("heartbeat_seconds", "stall_seconds"):
        value = getattr(args, name)
        if value is not None and not 0 < value < float("inf"):
            flag = "--" + name.replace("_", "-")
            parser.error(f"argument {flag}: must be a number of seconds > 0, got {value}")
    return args


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stop


@record  # under torchrun, an error's message reaches torchrun's failure summary
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit 0 when done or stopped by SIGTERM, 130 on SIGINT."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        train(args)
    except Stop:
        print("stopped by SIGTERM", file=sys.stderr, flush=True)
        return 0
    except KeyboardInterrupt:
        print("stopped by SIGINT", file=sys.stderr, flush=True)
        return 130
    return 0
