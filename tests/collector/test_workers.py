"""``--workers N``: a real collector with worker processes; runs spread by name, one API over
them, alerts numbered and kept by the main process, actions back to the agents."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

import gradwatch.agent as ga
from gradwatch.collector.shard import shard_of
from tests.helpers.fake_rank import NAMES, FakeRank, job
from tests.helpers.processes import PYTHON, CollectorProcess
from tests.helpers.push import push
from tests.helpers.waiting import wait_until

WORKERS = 2


def runs_on_each_worker(prefix: str) -> list[str]:
    """One run name per worker (the hash decides; the test must not assume it)."""
    names: dict[int, str] = {}
    for i in range(1000):
        names.setdefault(shard_of(f"{prefix}{i}", WORKERS), f"{prefix}{i}")
        if len(names) == WORKERS:
            return [names[k] for k in range(WORKERS)]
    raise AssertionError("the hash sends every name to one worker")


def metric(text: str, line: str) -> float:
    found = re.search(rf"^{re.escape(line)} (\S+)$", text, re.M)
    assert found, f"{line} not in /metrics"
    return float(found.group(1))


def test_workers_judge_their_runs_and_one_api_shows_them_all(tmp_path: Path) -> None:
    proc = CollectorProcess(tmp_path, "--workers", str(WORKERS)).start()
    try:
        names = runs_on_each_worker("w")
        for name in names:
            r = FakeRank(name)
            push(proc.listen, [r.hello(), r.stats(1), r.stats(2), r.stats(3, loss=math.nan)])
        alerts = {name: proc.wait_for_alert("non_finite", run=name) for name in names}
        stride = WORKERS + 1  # ids 1 + slot + k * stride: slot 0 the main process's
        slots = sorted((a["id"] - 1) % stride for a in alerts.values())
        assert slots == list(range(1, WORKERS + 1))  # each run judged by its own worker
        assert all(a["first_step"] == 3 and a["state"] == "firing" for a in alerts.values())
        assert sorted(a["seq"] for a in alerts.values()) == [1, 2]  # one sequence for all

        listed = proc.get("/runs")
        assert listed["total"] == WORKERS and {r["run"] for r in listed["runs"]} == set(names)
        assert proc.get("/runs", limit=1, offset=1)["runs"][0]["run"] == listed["runs"][1]["run"]
        for name in names:
            detail = proc.get(f"/runs/{name}")
            assert detail["seen"] == [0] and detail["ranks"][0]["step"] == 3
            assert proc.get(f"/runs/{name}/series", metric="loss")["run"] == name
        missing = httpx.get(proc.http + "/runs/nobody/series", timeout=10)
        assert missing.status_code == 404 and "nobody" in missing.json()["detail"]

        text = httpx.get(proc.http + "/metrics", timeout=10).text
        assert metric(text, "gradwatch_runs") == WORKERS
        assert metric(text, 'gradwatch_frames_received_total{kind="stats"}') == 3 * WORKERS
        assert metric(text, "gradwatch_messages_total") == 4 * WORKERS
        for name in names:
            assert metric(text, f'gradwatch_step{{rank="0",run="{name}"}}') == 3
            labels = f'rule="non_finite",run="{name}",severity="critical"'
            assert metric(text, f"gradwatch_alerts_firing{{{labels}}}") == 1
        assert text.count("# TYPE gradwatch_step gauge") == 1
        assert proc.get("/readyz")["ready"] is True

        acked = httpx.post(proc.http + f"/alerts/{alerts[names[0]]['id']}/ack", timeout=10)
        assert acked.json()["acked"] is True
        assert proc.stop() == 0
        assert f"{WORKERS} worker processes" in proc.log()
        sent = 4 * WORKERS
        assert re.search(rf"stopped: {sent} messages read, {sent} accepted", proc.log())

        proc.start()  # the alerts, their ids and acks survive; the workers take them up
        again = {a["run"]: a for a in proc.alerts()}
        assert {n: again[n]["id"] for n in names} == {n: alerts[n]["id"] for n in names}
        assert again[names[0]]["acked"] is True
        r = FakeRank(names[1])  # the same cause on the same run joins the alert held
        push(proc.listen, [r.hello(), r.stats(7, loss=math.nan)])
        wait_until(lambda: proc.alerts(run=names[1])[0]["step"] == 7)
        assert [a["id"] for a in proc.alerts(run=names[1])] == [alerts[names[1]]["id"]]
    finally:
        proc.stop()


def test_a_jobs_ranks_meet_in_one_worker_for_the_cross_rank_rules(tmp_path: Path) -> None:
    with CollectorProcess(tmp_path, "--workers", str(WORKERS)) as proc:
        ranks = job(3, run="replicas")
        frames = [r.hello() for r in ranks] + [r.stats(1, full=True) for r in ranks]
        frames += [r.stats(2, full=True) for r in ranks[:2]]
        frames.append(ranks[2].stats(2, weight={NAMES[3]: 5.2}))
        push(proc.listen, frames)
        alert = proc.wait_for_alert("replica_divergence", run="replicas")
        assert (alert["rank"], alert["parameter"]) == (2, NAMES[3])


def test_workers_send_actions_back_to_the_ranks(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    rules = tmp_path / "rules.toml"
    rules.write_text('[rules.non_finite]\naction = "stop"\n')
    with CollectorProcess(tmp_path, "--workers", str(WORKERS), "--rules", str(rules)) as proc:
        for name in runs_on_each_worker("act"):
            model = torch.nn.Linear(4, 1)
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            mon = ga.watch(model, opt, run=name, endpoint=proc.listen, rank=0, world_size=1)
            try:
                for step in range(1, 100_000):
                    loss = model(torch.randn(2, 4)).pow(2).mean() * (math.nan if step >= 3 else 1)
                    loss.backward()
                    opt.step()
                    opt.zero_grad()
                    mon.log(loss=loss.detach())
                    if mon.should_stop:
                        break
            finally:
                mon.close()
            assert step < 100_000, f"{name}: the stop never came back"
            (action,) = [a for a in mon.alerts() if a.rule == "non_finite"]
            assert action.action == "stop" and action.step == 3


def worker_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    cmdlines = {int(c): Path(f"/proc/{c}/cmdline").read_bytes() for c in children}
    return [c for c, cmd in cmdlines.items() if b"spawn_main" in cmd]


def test_a_worker_that_dies_is_started_again_and_judges_its_runs(tmp_path: Path) -> None:
    with CollectorProcess(tmp_path, "--workers", str(WORKERS)) as proc:
        assert proc.proc is not None
        names = runs_on_each_worker("again")
        before = wait_until(
            lambda: len(worker_pids(proc.proc.pid)) == WORKERS and worker_pids(proc.proc.pid)
        )
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: proc.log().count("starting it again") == WORKERS, 60)
        wait_until(lambda: httpx.get(proc.http + "/healthz", timeout=10).status_code == 200, 60)
        assert set(worker_pids(proc.proc.pid)).isdisjoint(before)
        for name in names:
            r = FakeRank(name)
            push(proc.listen, [r.hello(), r.stats(1), r.stats(2, loss=math.nan)])
        for name in names:
            assert proc.wait_for_alert("non_finite", run=name)["first_step"] == 2


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--workers", "0"], "workers: must be positive, got 0"),
        (["--workers", "2", "--db", ":memory:"], "workers: needs a database file"),
    ],
)
def test_bad_workers_setting_names_it(tmp_path: Path, flags: list[str], says: str) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "gradwatch.collector", *flags], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and says in done.stderr, done.stderr
