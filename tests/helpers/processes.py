"""Real processes for tests: a collector subprocess on free ports and the demo trainer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.waiting import wait_until

PYTHON = sys.executable
READY_TIMEOUT = 60.0


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return int(proc.returncode)


class CollectorProcess:
    """``python -m gradwatch.collector`` on free ports, with its SQLite file in ``workdir``.

    Binds ZeroMQ and HTTP on port 0 the first time; ``restart()`` reuses the same ports and
    database, as an operator restarting the service would.
    """

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.workdir = workdir
        self.extra = list(extra)
        self.db = workdir / "gradwatch.db"
        self.log_path = workdir / "collector.log"
        self.listen = "tcp://127.0.0.1:0"
        self.http_addr = "127.0.0.1:0"
        self.http = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CollectorProcess:
        ready = self.workdir / "collector.ready"
        ready.unlink(missing_ok=True)
        cmd = [
            PYTHON,
            "-m",
            "gradwatch.collector",
            "--listen",
            self.listen,
            "--http",
            self.http_addr,
            "--db",
            str(self.db),
            "--ready-file",
            str(ready),
            *self.extra,
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()

        def is_ready() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"collector exited {self.proc.returncode}:\n{self.log()}")
            return json.loads(ready.read_text()) if ready.exists() else None

        info = wait_until(is_ready, READY_TIMEOUT)
        self.listen = info["listen"]
        self.http = info["http"]
        self.http_addr = self.http.removeprefix("http://")
        return self

    def stop(self) -> int:
        return 0 if self.proc is None else _stop(self.proc)

    def restart(self) -> CollectorProcess:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.http + path, params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def alerts(self, **filters: Any) -> list[dict[str, Any]]:
        body = self.get("/alerts", **filters)
        return list(body["alerts"] if isinstance(body, dict) else body)

    def wait_ended(self, run: str, timeout: float = 30.0) -> dict[str, Any]:
        """The run's summary from ``/runs`` once every rank's bye is ingested.

        A trainer's last frames leave just before it exits; ingest trails them a little.
        """

        def ended() -> dict[str, Any] | None:
            runs = self.get("/runs")["runs"]
            return next((r for r in runs if r["run"] == run and r["ended"]), None)

        return dict(wait_until(ended, timeout, interval=0.1))

    def wait_for_alert(self, rule: str, timeout: float = 30.0, **filters: Any) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((a for a in self.alerts(**filters) if a["rule"] == rule), None)

        return dict(wait_until(find, timeout, interval=0.2))

    def __enter__(self) -> CollectorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def trainer_cmd(
    endpoint: str, run: str, steps: int, inject: Sequence[str] = (), *extra: str
) -> list[str]:
    cmd = [
        PYTHON,
        "-m",
        "gradwatch.trainer",
        "--steps",
        str(steps),
        "--endpoint",
        endpoint,
        "--run-name",
        run,
    ]
    for item in inject:
        cmd += ["--inject", item]
    # One intra-op thread: tests run a collector (and pytest) beside the trainer on 2 cores, and
    # oversubscribed OpenMP threads spin-wait each other into 100x slower steps.
    threads = [] if "--threads" in extra else ["--threads", "1"]
    return cmd + threads + list(extra)


def run_trainer(
    endpoint: str,
    run: str,
    steps: int,
    inject: Sequence[str] = (),
    *extra: str,
    timeout: float = 300.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the demo trainer to completion and return its output; raise if it failed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        trainer_cmd(endpoint, run, steps, inject, *extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"trainer exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_trainer(
    endpoint: str, run: str, steps: int, inject: Sequence[str] = (), *extra: str, log: Path
) -> subprocess.Popen[bytes]:
    """Start the demo trainer in the background, its output going to ``log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            trainer_cmd(endpoint, run, steps, inject, *extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
    return _stop(proc, timeout)
