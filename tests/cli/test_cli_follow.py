"""``gradwatch alerts --follow`` across a collector restart: it resumes from the last change it
printed and prints every alert change exactly once, none missed."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.live import raise_nan
from tests.helpers.processes import PYTHON, CollectorProcess, stop_process
from tests.helpers.waiting import wait_until


class Follower:
    """``gradwatch alerts --follow`` in a subprocess; its stdout lines, collected by a thread."""

    def __init__(self, url: str, *args: str) -> None:
        env = {**os.environ, "GRADWATCH_URL": url, "PYTHONUNBUFFERED": "1"}
        cmd = [PYTHON, "-m", "gradwatch.cli", "alerts", "--follow", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.decode().rstrip("\n"))

    def changes(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def stop(self) -> str:
        """Stop it; what it wrote to stderr."""
        stop_process(self.proc)  # type: ignore[arg-type]
        self._reader.join(10)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        with self.proc.stderr:
            return self.proc.stderr.read().decode()


def key(change: dict[str, Any]) -> tuple[int, str, bool]:
    return change["id"], change["state"], change["acked"]


def test_cli_follow_resumes_across_a_restart_missing_nothing(tmp_path: Path) -> None:
    proc = CollectorProcess(tmp_path).start()
    follower: Follower | None = None
    try:
        listed = raise_nan(proc, "listed")  # before following: comes from the listing
        follower = Follower(proc.http, "--json")
        wait_until(lambda: follower.changes(), 60)  # the stream is connected before the list
        streamed = raise_nan(proc, "streamed")
        httpx.post(f"{proc.http}/alerts/{listed['id']}/ack").raise_for_status()
        wait_until(lambda: len(follower.changes()) == 3, 60)

        proc.restart()  # same ports, same database; the follower reconnects by itself
        after = [raise_nan(proc, f"after-{i}") for i in range(3)]  # maybe before it is back
        httpx.post(f"{proc.http}/alerts/{streamed['id']}/ack").raise_for_status()
        wait_until(lambda: len(follower.changes()) >= 7, 60)
        final = {a["id"]: a for a in proc.alerts()}
    finally:
        stderr = follower.stop() if follower is not None else ""
        proc.stop()

    changes = follower.changes()
    assert [key(c) for c in changes] == [
        (listed["id"], "firing", False),
        (streamed["id"], "firing", False),
        (listed["id"], "firing", True),
        *[(a["id"], "firing", False) for a in after],
        (streamed["id"], "firing", True),
    ], stderr
    seqs = [c["seq"] for c in changes]
    assert seqs == list(range(1, 8))  # every change, once, in order
    for alert_id, alert in final.items():  # and the last one printed is the alert as it is
        assert [c for c in changes if c["id"] == alert_id][-1] == alert
