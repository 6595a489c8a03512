"""Helpers for the trainer tests: arguments and an in-process run with no monitor."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from gradwatch.trainer.cli import parse_args
from gradwatch.trainer.train import Run, StepRecord, train


def args_for(*extra: str, steps: int = 12, size: str = "tiny") -> argparse.Namespace:
    """Parsed arguments for a quiet, monitor-free run."""
    base = ["--no-monitor", "--steps", str(steps), "--size", size, "--eval-every", "0"]
    return parse_args([*base, "--warmup", "5", "--threads", "1", *extra])


def run(
    *extra: str,
    steps: int = 12,
    size: str = "tiny",
    on_step: Callable[[StepRecord, Run], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    lines: list[str] | None = None,
) -> list[StepRecord]:
    """Run the training loop in-process and return its records."""
    out = lines if lines is not None else []
    return train(
        args_for(*extra, steps=steps, size=size),
        on_step=on_step,
        sleep=sleep or (lambda s: None),
        log=out.append,
    )
