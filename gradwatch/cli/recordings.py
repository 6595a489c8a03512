"""``gradwatch replay`` and ``gradwatch recording show``: recorded frames, offline."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections import defaultdict
from typing import Any

from gradwatch import wire

AROUND = 5
"""Steps shown before and after the onset."""


def add_replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="recordings or tape files, in order")
    p.add_argument(
        "--rules", metavar="FILE", help="rule settings over the recorded ones (YAML or TOML)"
    )
    p.set_defaults(handler=replay)


def add_recording(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("show", help="summarise a recording: ranks, steps, the onset, the worst")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--top", type=int, default=5, metavar="K", help="worst parameters shown")
    s.set_defaults(handler=show)


def replay(args: argparse.Namespace) -> int:
    from gradwatch.collector.recording import RecordingError
    from gradwatch.collector.replay import describe
    from gradwatch.collector.replay import replay as run
    from gradwatch.collector.rules import RulesError, load

    logging.getLogger("gradwatch.collector.alerts").setLevel(logging.ERROR)  # printed below
    try:
        done = run(args.files, load(args.rules) if args.rules else None)
    except (RecordingError, RulesError) as exc:
        print(f"gradwatch: {exc}", file=sys.stderr)
        return 2
    for alert in done.recorded:
        print(f"recorded: {describe(alert)}")
    rejected = sum(done.rejected.values())
    print(f"replayed {done.frames} frames ({rejected} rejected): {len(done.alerts)} alert(s)")
    for a in done.alerts:
        print(describe(a))
    return 0


def show(args: argparse.Namespace) -> int:
    from gradwatch.collector.recording import RecordingError, read
    from gradwatch.collector.replay import describe

    try:
        head, entries = read(args.file)
        frames = [f for _, data in entries if (f := _decode(data)) is not None]
    except RecordingError as exc:
        print(f"gradwatch: {exc}", file=sys.stderr)
        return 2
    alert: dict[str, Any] | None = head.get("alert")
    if alert:
        print(f"alert #{alert['id']}: {describe(alert)}")
    hellos = {(f.run, f.rank): f for f in frames if isinstance(f, wire.Hello)}
    stats = [f for f in frames if isinstance(f, wire.Stats)]
    steps: dict[tuple[str, int], list[int]] = defaultdict(list)
    for s in stats:
        steps[s.run, s.rank].append(s.step)
    print(f"{len(frames)} frames, {len(steps)} rank(s)")
    for (run, rank), seen in sorted(steps.items()):
        print(f"  run {run} rank {rank}: steps {min(seen)}..{max(seen)} ({len(seen)} frames)")
    if not stats:
        return 0
    run, rank = (alert["run"], alert["rank"]) if alert else (stats[0].run, stats[0].rank)
    mine = [s for s in stats if s.run == run and s.rank == rank]
    if not mine:
        return 0
    onset = alert["first_step"] if alert else mine[-1].step
    print(f"\nrun {run} rank {rank} around step {onset}:")
    print(f"  {'step':>6}  {'loss':>10}  {'grad_norm':>10}")
    for s in mine:
        if abs(s.step - onset) <= AROUND:
            norm = s.metrics.get(wire.metrics.GRAD_NORM)
            print(f"  {s.step:>6}  {_num(s.loss):>10}  {_num(norm):>10}")
    hello = hellos.get((run, rank))
    at = min(mine, key=lambda s: (abs(s.step - onset), s.step))
    if hello is not None and "grad_norm" in hello.fields:
        norms = wire.unpack_columns(hello.fields, at.rows)["grad_norm"]
        names = [hello.params[i].name for i in hello.tracked]
        worst = sorted(zip(norms, names, strict=False), key=lambda x: _worst(x[0]))[: args.top]
        print(f"\nworst parameters at step {at.step} (gradient norm):")
        for value, name in worst:
            print(f"  {name}: {_num(value)}")
    return 0


def _decode(data: bytes) -> wire.Frame | None:
    try:
        return wire.decode(data)
    except wire.WireError:
        return None


def _worst(value: float) -> tuple[int, float]:
    """Non-finite first, then the largest."""
    return (0, 0.0) if not math.isfinite(value) else (1, -value)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
