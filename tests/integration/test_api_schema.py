"""schemathesis against the live API of a real collector process (with a token, so the
security scheme is exercised too): every operation, a bounded number of examples, every check,
0 failures and 0 errors. The SSE route is left out: its response never ends."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import zmq

from gradwatch import wire
from tests.helpers.fake_rank import FakeRank
from tests.helpers.processes import CollectorProcess
from tests.helpers.waiting import wait_until

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
TOKEN = "schema-token-0123456789"


def test_api_schema_holds_under_schemathesis(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    proc = CollectorProcess(
        tmp_path, "--api-token-file", str(token), "--recording-after-seconds", "0"
    ).start()
    try:
        ctx = zmq.Context()
        push = ctx.socket(zmq.DEALER)
        push.setsockopt(zmq.LINGER, 5000)
        push.connect(proc.listen)
        for i in range(3):  # alerts with a history, so their schema is checked on real data
            r = FakeRank(f"schema{i}")
            for frame in (r.hello(), r.stats(1), r.stats(2, loss=math.nan), r.stats(3)):
                push.send(wire.encode(frame))
        push.close()
        ctx.term()
        wait_until(lambda: len(proc.alerts()) == 3)
        for alert in proc.alerts():  # each has its recording, so that route answers 200 too
            wait_until(lambda a=alert: (tmp_path / f"recordings/alert-{a['id']}.gwrec").exists())
        out = subprocess.run(
            [str(SCHEMATHESIS), "run", proc.http + "/openapi.json", "--checks", "all",
             "--max-examples", "15", "--seed", "11", "--exclude-path", "/alerts/stream",
             "--header", f"Authorization: Bearer {TOKEN}", "--no-color"],
            capture_output=True, text=True, timeout=240, cwd=tmp_path,
        )  # fmt: skip
        summary = out.stdout[-3000:]
        assert out.returncode == 0, summary
        assert "No issues found" in summary and "passed" in summary, summary
    finally:
        proc.stop()
