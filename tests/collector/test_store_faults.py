"""A failing database never loses an alert: it stays in memory, reaches the log and every
listener (SSE, Alertmanager), is retried, and /readyz says why it is not ready. The real thing
on a full tmpfs where the machine lets us mount one; an injected SQLite error everywhere."""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient

from gradwatch.collector.alert import Alert
from gradwatch.collector.api import create_app
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import build_core
from gradwatch.collector.store import Store
from tests.helpers.fake_rank import FakeRank
from tests.helpers.processes import CollectorProcess
from tests.helpers.push import push
from tests.helpers.waiting import wait_until

T = TypeVar("T")


class FullDisk(Store):
    """A store whose writes fail with SQLite's own disk-full error while ``full`` is set."""

    full = False

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def write(db: sqlite3.Connection) -> T:
            if self.full:
                raise sqlite3.OperationalError("database or disk is full")
            return fn(db)

        return super()._write(write)


def test_store_failure_keeps_alerts_notifies_listeners_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = CollectorConfig(db_path=str(tmp_path / "f.db"))
    store = FullDisk(config.db_path)
    core = build_core(config, store=store)
    heard: list[Alert] = []
    core.book.subscribe(heard.append)  # as SSE and the Alertmanager pusher are
    store.full = True
    with caplog.at_level(logging.INFO):
        for i in range(30):
            r = FakeRank(f"full{i}")
            for frame in (r.hello(), r.stats(1), r.stats(2, loss=math.nan)):
                core.engine.on_frame(core.fleet.apply(frame), frame)
        core.engine.tick()
    assert len(core.book.alerts("firing")) == 30 and len(heard) == 30
    assert caplog.text.count("ALERT non_finite") == 30
    assert "could not save alerts" in caplog.text
    with TestClient(create_app(core)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["db_writable"] is False
        assert any("database or disk is full" in p for p in body["problems"]), body
        assert client.get("/alerts").json()["total"] == 30
        metrics = client.get("/metrics").text
        assert "gradwatch_alerts_unsaved 30.0" in metrics
        assert "gradwatch_store_write_failures_total 0.0" not in metrics

        store.full = False
        core.engine.tick()  # the next flush retries
        assert client.get("/readyz").status_code == 200
    assert len(Store(config.db_path).load_alerts()) == 30
    assert core.close() == 0


def test_store_failure_at_shutdown_is_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FullDisk(tmp_path / "s.db")
    core = build_core(CollectorConfig(db_path=store.path), store=store)
    store.full = True
    r = FakeRank("late")
    for frame in (r.hello(), r.stats(1, loss=math.nan)):
        core.engine.on_frame(core.fleet.apply(frame), frame)
    with caplog.at_level(logging.ERROR):
        assert core.close() == 1
    assert "1 alert change(s) could not be saved" in caplog.text


# ----------------------------------------------------------------------------- the real thing


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (needs the right to mount; skipped elsewhere, the injected tests cover
    the logic)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    try:  # the last few blocks
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    os.close(fd)
    return filler


def _nan_runs(endpoint: str, names: list[str]) -> None:
    frames = []
    for name in names:
        r = FakeRank(name)
        frames += [r.hello(), r.stats(1), r.stats(2, loss=math.nan)]
    push(endpoint, frames)


def test_store_full_disk_for_real(tmp_path: Path, small_disk: Path) -> None:
    proc = CollectorProcess(tmp_path, "--db", str(small_disk / "g.db")).start()
    try:
        filler = _fill(small_disk)
        _nan_runs(proc.listen, [f"disk{i}" for i in range(40)])
        wait_until(lambda: len(proc.alerts(limit=1000)) == 40, 30)
        ready = wait_until(
            lambda: (r := httpx.get(proc.http + "/readyz", timeout=10)).status_code == 503 and r
        )
        assert any("disk is full" in p for p in ready.json()["problems"]), ready.text
        log = proc.log()
        assert log.count("ALERT non_finite") == 40 and "could not save alerts" in log

        filler.unlink()  # space again: the next flush saves everything
        wait_until(lambda: httpx.get(proc.http + "/readyz", timeout=10).status_code == 200, 30)
        assert len(Store(small_disk / "g.db").load_alerts()) == 40

        _fill(small_disk)
        _nan_runs(proc.listen, [f"late{i}" for i in range(5)])
        wait_until(lambda: len(proc.alerts(limit=1000)) == 45, 30)
        assert proc.stop() == 0  # a clean exit, not a traceback
        log = proc.log()
        assert "5 alert change(s) could not be saved" in log and "Traceback" not in log
    finally:
        proc.stop()
