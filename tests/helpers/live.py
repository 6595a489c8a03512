"""Driving a live collector process: frames over a real ZeroMQ PUSH socket, alerts raised."""

from __future__ import annotations

import math
import os
import subprocess
from typing import Any

import zmq

from gradwatch import wire
from tests.helpers.fake_rank import FakeRank
from tests.helpers.processes import PYTHON, CollectorProcess


def send_frames(endpoint: str, frames: list[wire.Frame]) -> None:
    """Send ``frames`` from a fresh PUSH socket, waiting (LINGER) until they have left."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.DEALER)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(endpoint)
    for frame in frames:
        push.send(wire.encode(frame))
    push.close()
    ctx.term()


def raise_nan(proc: CollectorProcess, run: str, rank: int = 0) -> dict[str, Any]:
    """A rank of ``run`` whose loss turns NaN at step 2, then says goodbye: exactly one
    ``non_finite`` alert, firing at once. Returns it as the API shows it."""
    r = FakeRank(run, rank)
    send_frames(proc.listen, [r.hello(), r.stats(1), r.stats(2, loss=math.nan), r.bye(2)])
    return proc.wait_for_alert("non_finite", run=run, rank=rank)


def gradwatch(
    *args: str, url: str = "", env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``gradwatch ARGS`` (as ``python -m gradwatch.cli``) with GRADWATCH_URL=url, piped."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
    environ.pop("NO_COLOR", None)
    environ.update({"GRADWATCH_URL": url} if url else {})
    environ.update(env or {})
    cmd = [PYTHON, "-m", "gradwatch.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=environ)
