"""What the benchmarks share: waiting for a condition, and a real collector process on free
ports (``python bench/NAME.py`` puts this folder on ``sys.path``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true; return that (TimeoutError after
    ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(interval)
    return value


class Collector:
    """``python -m gradwatch.collector`` on free ports in ``workdir``, with ``extra`` flags."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        ready = workdir / "ready"
        cmd = [sys.executable, "-m", "gradwatch.collector", "--listen", "tcp://127.0.0.1:0",
               "--http", "127.0.0.1:0", "--db", str(workdir / "bench.db"),
               "--ready-file", str(ready), *extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stderr=(workdir / "log").open("wb"))
        info = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), 60, 0.2)
        self.listen: str = info["listen"]
        self.http: str = info["http"]
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
