"""Helpers for the trainer tests: arguments, an in-process run with no monitor, a probe of
per-step update ratios, and real torchrun jobs."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from gradwatch.trainer.cli import parse_args
from gradwatch.trainer.train import Run, StepRecord, train
from tests.helpers.waiting import free_port, wait_until


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


class UpdateRatios:
    """Per-step ``|w_after - w_before| / |w_before|`` of named parameters across
    ``optimizer.step()``, as the agent measures it; use as ``on_step``.

    Hooks go on the optimizer at step 1, so ratios start at step 2.
    """

    def __init__(self, *names: str) -> None:
        self.names = names
        self.ratios: dict[str, dict[int, float]] = {n: {} for n in names}
        self._before: dict[str, torch.Tensor] = {}
        self._step = 1

    def __call__(self, rec: StepRecord, r: Run) -> None:
        self._step = rec.step + 1
        if rec.step != 1:
            return
        params = {n: r.model.get_parameter(n) for n in self.names}

        def pre(opt: Any, args: Any, kwargs: Any) -> None:
            self._before = {n: p.detach().double().clone() for n, p in params.items()}

        def post(opt: Any, args: Any, kwargs: Any) -> None:
            for n, p in params.items():
                w = self._before[n]
                self.ratios[n][self._step] = float((p.detach().double() - w).norm() / w.norm())

        r.optimizer.register_step_pre_hook(pre)
        r.optimizer.register_step_post_hook(post)


def torchrun_cmd(
    *trainer_args: str, nproc: int = 2, module: str = "gradwatch.trainer"
) -> list[str]:
    """``torchrun`` (as ``python -m torch.distributed.run``) of the demo trainer (or a
    ``module`` that runs it) on CPU, with its rendezvous on a free loopback port and one
    intra-op thread per rank."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
        "--nnodes", "1", "--nproc-per-node", str(nproc),
        "-m", module, "--size", "tiny", "--threads", "1", *trainer_args,
    ]  # fmt: skip


class TrainerJob:
    """A trainer (or torchrun) process in its own process group; a thread collects its output
    lines. Use as a context manager: leaving it stops the whole group (SIGTERM, then SIGKILL).
    """

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.lines: list[str] = []
        self.stamps: list[float] = []
        """Wall clock (``time.time()``) at which each line was read."""
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> TrainerJob:
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            start_new_session=True,  # its own process group, so stop() reaches every rank
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.stamps.append(time.time())
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> float:
        """Wait until a line containing ``text`` was printed; return when it was read."""

        def seen() -> float | None:
            read = zip(self.stamps, self.lines, strict=False)  # the reader may be mid-line
            return next((t for t, x in read if text in x), None)

        return float(wait_until(seen, timeout))

    def wait(self, timeout: float = 120.0) -> int:
        """Wait for the job to end (all its output read); returns torchrun's exit code."""
        assert self.proc is not None and self._reader is not None
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the whole group, SIGKILL it after ``timeout``; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.wait(timeout)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def torchrun_job(
    *trainer_args: str,
    nproc: int = 2,
    env: dict[str, str] | None = None,
    module: str = "gradwatch.trainer",
) -> TrainerJob:
    """A :class:`TrainerJob` of ``torchrun_cmd(*trainer_args)``."""
    return TrainerJob(torchrun_cmd(*trainer_args, nproc=nproc, module=module), env)


def trainer_job(*trainer_args: str, env: dict[str, str] | None = None) -> TrainerJob:
    """A :class:`TrainerJob` of the trainer alone (``python -m gradwatch.trainer``)."""
    cmd = [sys.executable, "-m", "gradwatch.trainer", "--size", "tiny", "--threads", "1"]
    return TrainerJob([*cmd, *trainer_args], env)


def summaries(output: str) -> dict[int, str]:
    """Each rank's ``[rank R] done: ...`` summary line of a torchrun job, by rank."""
    found = re.findall(r"^\[rank (\d+)\] (done: .*)$", output, re.M)
    return {int(rank): line for rank, line in found}
