"""A missing, slow or restarted collector never stops training, and nothing is lost silently."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers.processes import CollectorProcess, run_trainer, start_trainer
from tests.helpers.waiting import free_port, wait_until


def _rank0(collector_process: CollectorProcess, run: str) -> dict | None:
    runs = {r["run"]: r for r in collector_process.get("/runs")["runs"]}
    return runs[run]["ranks"][0] if run in runs else None


def _rank0_step_in_log(log: Path) -> int:
    """The latest step the trainer printed (its ``step N | ...`` lines)."""
    steps = re.findall(r"^step (\d+) ", log.read_text(errors="replace"), re.M)
    return int(steps[-1]) if steps else 0


def test_resilience_trainer_completes_every_step_without_a_collector() -> None:
    nobody = f"tcp://127.0.0.1:{free_port()}"
    out = run_trainer(nobody, "orphan", 60, (), "--size", "tiny", "--log-every", "1", timeout=120)
    steps = [line for line in out.stdout.splitlines() if line.startswith("step ")]
    assert len(steps) == 60, out.stdout[-2000:]


def test_resilience_collector_restart_mid_run_loses_no_step(tmp_path: Path) -> None:
    collector_process = CollectorProcess(tmp_path).start()
    trainer = start_trainer(collector_process.listen, "restarted", 3000, (), "--size", "tiny",
                            log=tmp_path / "trainer.log")  # fmt: skip
    try:
        wait_until(
            lambda: (_rank0(collector_process, "restarted") or {}).get("last_step", -1) >= 20, 60
        )
        collector_process.stop()
        # The trainer keeps stepping while nobody listens; its frames are dropped and counted.
        stopped_at = _rank0_step_in_log(tmp_path / "trainer.log")
        wait_until(lambda: _rank0_step_in_log(tmp_path / "trainer.log") >= stopped_at + 100, 60)
        collector_process.start()
        assert trainer.wait(timeout=240) == 0, (tmp_path / "trainer.log").read_text()[-3000:]

        # The agent re-sent its hello after reconnecting, so stats flowed again and carried the
        # cumulative drop count of the outage; the run finished at its last step.
        rank = wait_until(
            lambda: (r := _rank0(collector_process, "restarted")) and r["ended"] and r, 30
        )
        assert rank["last_step"] >= 2999, rank
        assert rank["dropped"] > 0, rank
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
        collector_process.stop()
