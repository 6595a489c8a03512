"""Flight recordings and replay, end to end: a real collector records a faulty run; the
recording downloads, summarises and replays to the alerts the live collector raised."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from gradwatch.collector.replay import replay
from tests.helpers.processes import CollectorProcess, run_trainer
from tests.helpers.waiting import wait_until

RUN = "rec-spike"
AT = 40


def _key(a: Any) -> tuple[str, int, str, int, str]:
    d = a if isinstance(a, dict) else a.__dict__
    return (d["rule"], d["rank"], d["parameter"] or "", d["first_step"], d["severity"])


def _gradwatch(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "gradwatch.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_recordings_alert_recording_downloads_and_replays_exactly(tmp_path: Path) -> None:
    tape = tmp_path / "tape"
    collector = CollectorProcess(
        tmp_path, "--recording-after-seconds", "0.1", "--record", str(tape)
    ).start()
    try:
        run_trainer(collector.listen, RUN, AT + 10, [f"spike@{AT}"], "--size", "tiny")
        alert = collector.wait_for_alert("loss_spike", run=RUN)
        collector.wait_ended(RUN)

        def download() -> bytes | None:
            r = httpx.get(f"{collector.http}/alerts/{alert['id']}/recording", timeout=10)
            return r.content if r.status_code == 200 else None

        saved = tmp_path / "spike.gwrec"
        saved.write_bytes(wait_until(download))
        assert httpx.get(f"{collector.http}/alerts/999999/recording").status_code == 404
        live = sorted(_key(a) for a in collector.alerts(run=RUN))
    finally:
        collector.stop()  # closes the tape

    # The recording reproduces the alert it was made for, at the same step.
    done = replay([saved])
    assert done.recorded[0]["id"] == alert["id"]
    assert _key(alert) in [_key(a) for a in done.alerts]
    # The full tape reproduces every alert of the run.
    tapes = sorted(tape.glob("tape-*.gwrec"))
    assert tapes
    assert sorted(_key(a) for a in replay(tapes).alerts if a.run == RUN) == live
    # A changed threshold shows: a spike of this size no longer counts.
    calmer = replay([saved], {"loss_spike": {"ratio": 1e9, "zscore": 1e9}})
    assert "loss_spike" not in [a.rule for a in calmer.alerts]

    shown = _gradwatch("recording", "show", str(saved))
    assert f"alert #{alert['id']}" in shown and f"run {RUN} rank 0" in shown
    assert "worst parameters" in shown
    rules = tmp_path / "calm.toml"
    rules.write_text("[rules.loss_spike]\nratio = 1e9\nzscore = 1e9\n")
    replayed = _gradwatch("replay", str(saved))
    assert f"step {alert['first_step']:>6}  loss_spike" in replayed
    calm = _gradwatch("replay", str(saved), "--rules", str(rules))
    assert "loss_spike" not in calm.split("alert(s)\n", 1)[1]  # only in the recorded line
