"""The demo trainer under real torchrun: 2 ranks on CPU (gloo), DDP, faults aimed at one rank."""

from __future__ import annotations

import re

import pytest

from gradwatch import wire
from tests.helpers.frame_sink import FrameSink
from tests.helpers.trainer_runs import summaries, torchrun_job

pytestmark = pytest.mark.slow  # each job starts torchrun and two trainers (~10 s on 2 cores)

QUIET = ("--no-monitor", "--log-every", "1", "--eval-every", "0")


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    with torchrun_job(*args, env=env) as job:
        code = job.wait()
    return code, job.output


def _digest(summary: str) -> str:
    match = re.search(r"\| weights ([0-9a-f]{12})$", summary)
    assert match, summary
    return match.group(1)


def test_ddp_healthy_job_keeps_replicas_identical_and_uses_the_run_name() -> None:
    sink = FrameSink()
    try:
        code, out = _run(
            "--steps", "6", "--endpoint", sink.endpoint, "--run-name", "from-flag",
            "--log-every", "1", "--eval-every", "3",
            env={"GRADWATCH_RUN": "from-env"},
        )  # fmt: skip
        assert code == 0, out
        done = summaries(out)
        assert sorted(done) == [0, 1] and all(
            s.startswith("done: 6/6 steps") for s in done.values()
        )
        assert _digest(done[0]) == _digest(done[1])  # DDP kept the replicas in step
        step_lines = [x for x in out.splitlines() if re.match(r"(\[rank \d\] )?step \d", x)]
        assert [x.split(" | ")[0] for x in step_lines] == [f"step {s}" for s in range(1, 7)]
        assert "DDP 2 ranks, gloo on cpu" in out

        while len(sink.of(wire.Bye)) < 2:
            sink.drain(wire.Bye)
        stats = sink.of(wire.Stats)
        assert {(f.run, f.rank) for f in stats} == {("from-flag", 0), ("from-flag", 1)}
        assert sorted((f.rank, f.reason) for f in sink.of(wire.Bye)) == [(0, "close"), (1, "close")]
    finally:
        sink.close()


def test_ddp_run_name_from_env_under_torchrun() -> None:
    sink = FrameSink()
    try:
        code, out = _run(
            "--steps", "2", "--endpoint", sink.endpoint, "--eval-every", "0",
            env={"GRADWATCH_RUN": "from-env"},
        )  # fmt: skip
        assert code == 0, out
        while len(sink.of(wire.Bye)) < 2:
            sink.drain(wire.Bye)
        assert {f.run for f in sink.frames} == {"from-env"}
    finally:
        sink.close()


def test_ddp_desync_on_rank_1_makes_its_weights_differ() -> None:
    code, out = _run("--steps", "4", "--inject", "desync@3:rank=1", *QUIET)
    assert code == 0, out
    done = summaries(out)
    assert _digest(done[0]) != _digest(done[1])  # nothing resyncs the replicas
    assert "[rank 1] inject desync@3:rank=1:" in out and "[rank 0] inject" not in out
    assert "faults desync" in done[1] and "faults" not in done[0]


def test_ddp_raise_on_rank_1_fails_the_job_with_its_message() -> None:
    code, out = _run("--steps", "6", "--inject", "raise@3:rank=1", *QUIET)
    assert code != 0
    assert "injected fault raise@3:rank=1: rank 1 crashed on purpose" in out
    assert re.search(r"Root Cause.*\n(.*\n)*?\s*rank\s*: 1 ", out), out[
        -3000:
    ]  # torchrun blames it


def test_ddp_slow_on_rank_1_sleeps_only_there() -> None:
    code, out = _run("--steps", "4", "--inject", "slow@2:rank=1", *QUIET)
    assert code == 0, out
    done = summaries(out)
    assert "faults slow" in done[1] and "faults" not in done[0]
    assert _digest(done[0]) == _digest(done[1])  # a straggler, still in step


def test_ddp_hang_on_rank_1_holds_every_rank_at_its_step() -> None:
    with torchrun_job("--steps", "20", "--inject", "hang@3:rank=1", *QUIET) as job:
        job.wait_for("[rank 1] inject hang@3:rank=1")
        assert job.stop() is not None
    done = summaries(job.output)
    # Rank 0 cannot finish step 3 without rank 1's gradients: it waits in all-reduce.
    assert done[0].startswith("done: 2/20 steps") and done[1].startswith("done: 2/20 steps")
    assert not re.search(r"^step 3 ", job.output, re.M)
