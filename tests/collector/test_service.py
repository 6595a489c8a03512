"""The collector as a real process: ready file, health, SSE, restart, signals, bad config."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.helpers.fake_rank import FakeRank
from tests.helpers.processes import PYTHON, CollectorProcess
from tests.helpers.push import push
from tests.helpers.waiting import wait_until


def test_service_ready_file_and_health(collector_process: CollectorProcess) -> None:
    info = json.loads((collector_process.workdir / "collector.ready").read_text())
    assert info["listen"].startswith("tcp://127.0.0.1:") and not info["listen"].endswith(":0")
    assert (
        info["http"].startswith("http://127.0.0.1:") and info["pid"] == collector_process.proc.pid
    )  # type: ignore[union-attr]
    assert collector_process.get("/healthz")["ingest_alive"] is True
    assert collector_process.get("/readyz")["ready"] is True


def test_service_streams_alerts_persists_them_and_stops_cleanly(tmp_path: Path) -> None:
    proc = CollectorProcess(tmp_path).start()
    try:
        events: list[str] = []

        def listen() -> None:
            with httpx.stream("GET", proc.http + "/alerts/stream", timeout=30) as r:
                for line in r.iter_lines():
                    events.append(line)

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        wait_until(lambda: ": connected" in events)  # subscribed: no change can be missed
        r = FakeRank("svc")
        push(proc.listen, [r.hello(), r.stats(1), r.stats(2, loss=math.nan)])
        alert = proc.wait_for_alert("non_finite", timeout=10)
        assert alert["step"] == 2 and alert["run"] == "svc"
        wait_until(lambda: any(e.startswith("data:") for e in events), 10)
        assert "event: alert" in events
        # 0 only if SIGTERM alone ended it: stop() kills after its bounded wait (exit -9).
        assert proc.stop() == 0
        reader.join(5)
        assert not reader.is_alive()  # the stream ended with the server
        assert "ALERT non_finite [critical]" in proc.log()

        proc.start()
        [again] = proc.alerts()
        assert again["id"] == alert["id"] and again["state"] == "firing"
        runs = proc.get("/runs")["runs"]
        assert runs[0]["run"] == "svc" and runs[0]["ranks"][0]["last_step"] == 2
    finally:
        proc.stop()


def test_service_rules_file_overrides_and_rejects_unknown(tmp_path: Path) -> None:
    good = tmp_path / "rules.toml"
    good.write_text(
        "[rules.trainer_silent]\nfloor_seconds = 1.0\n[rules.loss_spike]\nenabled = false\n"
    )
    proc = CollectorProcess(tmp_path, "--rules", str(good)).start()
    try:
        r = FakeRank("quiet")
        push(proc.listen, [r.hello(), r.stats(1)])
        alert = proc.wait_for_alert("trainer_silent", timeout=10)
        assert alert["run"] == "quiet"
    finally:
        proc.stop()
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  loss_spike:\n    ratoi: 20\n")
    out = subprocess.run(
        [PYTHON, "-m", "gradwatch.collector", "--rules", str(bad), "--db", str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "loss_spike" in out.stderr and "ratoi" in out.stderr


def test_collector_imports_no_torch() -> None:
    code = (
        "import sys, gradwatch.collector, gradwatch.collector.cli, gradwatch.collector.service, "
        "gradwatch.collector.api; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
