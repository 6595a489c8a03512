"""``--workers N`` seen from the main process: the worker processes (started, asked, stopped)
and the API's views over them.

Each worker binds two ``ipc://`` endpoints in a private folder: frames (PULL) and answers
(REP); every worker connects to the main process's inbox (PULL), where alert changes, actions
and its ready and done messages arrive (read by the router's thread, router.py).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

import msgpack
import zmq

from gradwatch.settings import ConfigError

from .config import CollectorConfig
from .core import Core
from .exporter import WorkerScrape
from .schemas import RunDetail, RunList
from .series import RankHistory
from .shard import shard_of
from .views import WorkerGone
from .worker import READY, WorkerSpec, run_worker

log = logging.getLogger(__name__)

START_SECONDS = 60.0
"""How long the workers may take to start (import, open the database, bind)."""
ASK_SECONDS = 10.0
"""How long a question to a worker may take (then the API answers 503)."""
STOP_SECONDS = 15.0
"""How long the workers may take to finish their frames and stop."""
RESTART_SECONDS = 10.0
"""A worker that exits is started again, at most once per this many seconds."""


class Workers:
    """The worker processes; ``start()`` returns once every one is ready."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config, self.count = config, config.workers
        self.folder = tempfile.mkdtemp(prefix="gradwatch-workers-")
        self.ctx = zmq.Context()
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.bind(f"ipc://{self.folder}/inbox")
        self.specs = [
            WorkerSpec(
                config,
                k,
                f"ipc://{self.folder}/frames-{k}",
                f"ipc://{self.folder}/answers-{k}",
                f"ipc://{self.folder}/inbox",
                os.getpid(),
            )
            for k in range(self.count)
        ]
        self.frames: list[zmq.Socket[bytes]] = []
        self.processes: list[BaseProcess] = []
        self.restarted: dict[int, float] = {}
        """When each worker was last started again (``time.monotonic()``)."""
        self.done: dict[int, dict[str, Any]] = {}
        """The ingest health each stopped worker reported last."""

    def start(self) -> None:
        """Start every worker and wait for each to say it is ready; ConfigError (naming
        ``workers``) when one fails to."""
        for spec in self.specs:
            self.processes.append(self._spawn(spec))
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, self.config.rcvhwm)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(spec.frames)
            self.frames.append(sock)
        ready: set[int] = set()
        deadline = time.monotonic() + START_SECONDS
        while len(ready) < self.count:
            dead = [p.name for p in self.processes if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"not ready in {START_SECONDS:.0f} s"
                raise ConfigError("workers", f"could not start the worker processes: {why}")
            if self.inbox.poll(200):
                kind, *rest = self.inbox.recv_multipart()
                if kind == READY:
                    ready.add(int(rest[0]))

    @staticmethod
    def _spawn(spec: WorkerSpec) -> BaseProcess:
        spawn = multiprocessing.get_context("spawn")
        process = spawn.Process(
            target=run_worker, args=(spec,), name=f"gradwatch-worker-{spec.index}"
        )
        process.start()
        return process

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.processes)

    def revive(self, now: float) -> None:
        """Start again each worker that exited (at most once per RESTART_SECONDS each): it
        takes up its runs' open alerts from the database, and their state from their next
        frames; frames sent to it meanwhile wait in its socket (up to ``rcvhwm``)."""
        for k, process in enumerate(self.processes):
            if process.is_alive() or now - self.restarted.get(k, -1e18) < RESTART_SECONDS:
                continue
            self.restarted[k] = now
            log.error(
                "%s exited (code %s); starting it again: its runs' rules start over from "
                "their next frames", process.name, process.exitcode,
            )  # fmt: skip
            self.processes[k] = self._spawn(self.specs[k])

    def ask(self, k: int, *question: Any) -> Any:
        """Ask worker ``k`` (a fresh REQ socket: any thread may ask); WorkerGone at once when it
        is not running (it is started again on the next tick), or after ASK_SECONDS."""
        if not self.processes[k].is_alive():
            raise WorkerGone(f"worker {k} is not running (it is being started again)")
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.specs[k].answers)
            sock.send(msgpack.packb(list(question)))
            if not sock.poll(int(ASK_SECONDS * 1000)):
                raise WorkerGone(f"worker {k} did not answer in {ASK_SECONDS:.0f} s")
            return msgpack.unpackb(sock.recv())
        finally:
            sock.close()

    def stop(self, read_inbox: Callable[[list[bytes]], None]) -> None:
        """Ask every worker to stop, passing what they still send to ``read_inbox`` until each
        says it is done (or STOP_SECONDS pass); then end the processes left."""
        for k in range(self.count):
            try:
                self.ask(k, "stop")
            except WorkerGone:
                log.error("worker %d did not answer the stop request", k)
        deadline = time.monotonic() + STOP_SECONDS
        while len(self.done) < self.count and time.monotonic() < deadline:
            if self.inbox.poll(200):
                read_inbox(self.inbox.recv_multipart())
            elif not any(p.is_alive() for p in self.processes):
                break
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("%s did not stop in time; terminating it", process.name)
                process.terminate()
                process.join(5)

    def on_done(self, index: bytes, health: bytes) -> None:
        self.done[int(index)] = msgpack.unpackb(health)

    def close(self) -> None:
        """Close the sockets and the folder; end any worker still running."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(5)
        for sock in self.frames:
            sock.close()
        self.inbox.close()
        self.ctx.term()
        shutil.rmtree(self.folder, ignore_errors=True)


class RemoteViews:
    """The API's runs, series and scrape asked of the workers (views.RunViews)."""

    def __init__(self, workers: Workers, core: Core) -> None:
        self.workers, self.core = workers, core

    def _owner(self, run: str) -> int:
        return shard_of(run, self.workers.count)

    def _all(self, *question: Any) -> list[Any]:
        return [self.workers.ask(k, *question) for k in range(self.workers.count)]

    def runs(self, limit: int, offset: int, sessions: bool) -> RunList:
        pages = [
            RunList.model_validate_json(p) for p in self._all("runs", offset + limit, 0, sessions)
        ]
        merged = sorted(
            (r for page in pages for r in page.runs),
            key=lambda r: (r.last_seen, r.run),
            reverse=True,
        )
        total = sum(p.total for p in pages)
        return RunList(
            runs=merged[offset : offset + limit], total=total, limit=limit, offset=offset
        )

    def run(self, name: str) -> RunDetail | None:
        got = self.workers.ask(self._owner(name), "run", name)
        return None if got is None else RunDetail.model_validate_json(got)

    def series(self, run: str, rank: int | None, wanted: list[str]) -> RankHistory | str:
        status, body = self.workers.ask(self._owner(run), "series", run, rank, wanted)
        return body if status == 404 else RankHistory.model_validate_json(body)

    def metrics(self) -> bytes:
        parts = [WorkerScrape(*p) for p in self._all("metrics")]
        return self.core.registry.text_with(parts)

    def problems(self) -> list[str]:
        out = self.core.problems()
        for k in range(self.workers.count):
            try:
                out.extend(f"worker {k}: {p}" for p in self.workers.ask(k, "problems"))
            except WorkerGone as exc:
                out.append(str(exc))
        return out

    def alive(self) -> bool:
        return self.workers.alive()
