"""A ``--workers`` worker process: the runs the main process routes to it (shard.py) with
their fleet, rules, alert lifecycle, flight recorder and back channel.

Frames come from the main process on a PULL socket as ``[identity, payload]``; alert changes
and actions go back on a PUSH socket (the main process numbers, saves and announces the alerts
and sends the actions on the agents' socket); a REP socket answers the main process's
questions (runs, series, its part of a scrape, readiness) and its request to stop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq

from .alert import Alert
from .config import CollectorConfig
from .core import Core, build_core
from .ingest import Ingest
from .logs import configure as configure_logging
from .shard import Part
from .store import ALERTS, Store
from .views import LocalViews

log = logging.getLogger(__name__)

READY, ALERT, UPDATE, ACTION, DONE = b"ready", b"alert", b"update", b"action", b"done"
"""The first part of a message from a worker to the main process: ``[READY, index]``,
``[ALERT, [row, dropped]]`` (a numbered change), ``[UPDATE, [row, ...]]`` (alerts updated
since the last flush), ``[ACTION, identity, payload]``, ``[DONE, index, health]``."""
PARENT_CHECK_SECONDS = 0.5
"""How often a worker checks that the main process is still there (it exits when not)."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is started with (picklable)."""

    config: CollectorConfig
    index: int
    frames: str
    """Its PULL endpoint (it binds): frames from the main process."""
    answers: str
    """Its REP endpoint (it binds): the main process's questions."""
    inbox: str
    """The main process's PULL endpoint (it connects): alert changes, actions, ready, done."""
    parent: int
    """The main process's pid."""


def run_worker(spec: WorkerSpec) -> None:
    """The worker process (the target of a spawned ``multiprocessing.Process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the main stops us
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config = spec.config
    if config.record:  # each worker records its runs' frames in a folder of its own
        config = dataclasses.replace(
            config, record=str(Path(config.record) / f"worker-{spec.index}")
        )
    configure_logging(config.log_level)
    ctx = zmq.Context()
    out = ctx.socket(zmq.PUSH)
    out.setsockopt(zmq.SNDHWM, 0)  # alert changes are never dropped; the main process is local
    out.connect(spec.inbox)
    store = Store(config.db_path)
    core = build_core(config, store=store, part=Part(config.workers, spec.index))

    def send_alert(alert: Alert) -> None:
        dropped = alert.state == "pending" and core.book.get(alert.id) is None
        out.send_multipart([ALERT, msgpack.packb([list(ALERTS.row(alert)), dropped])])

    def send_action(identity: bytes, payload: bytes) -> None:
        out.send_multipart([ACTION, identity, payload])

    def send_updates(alerts: list[Alert]) -> None:
        rows = [list(ALERTS.row(alert)) for alert in alerts]
        out.send_multipart([UPDATE, msgpack.packb(rows)])

    core.book.subscribe(send_alert)
    core.book.forward = send_updates
    ingest = Ingest(
        spec.frames, core.fleet, core.engine, core.health,
        max_frame_bytes=config.max_frame_bytes, rcvhwm=config.rcvhwm,
        tick_seconds=config.tick_seconds, back=core.back, recorder=core.recorder,
        tape=core.tape, socket_type=zmq.PULL, reply=send_action,
    )  # fmt: skip
    answers = Answers(ctx, spec.answers, core, stop)
    ingest.start()
    answers.start()
    out.send_multipart([READY, str(spec.index).encode()])
    while not stop.wait(PARENT_CHECK_SECONDS):
        if os.getppid() != spec.parent:
            log.error("worker %d: the main process is gone; stopping", spec.index)
            break
    ingest.stop()
    core.close()
    answers.stop()
    out.send_multipart([DONE, str(spec.index).encode(), msgpack.packb(core.health.snapshot())])
    out.close(linger=5000)
    ctx.term()


class Answers:
    """The worker's REP socket, answered on its own thread (reads run beside ingest, as the
    API's do in one process)."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, core: Core, stop: threading.Event):
        self.core, self.stop_worker = core, stop
        self.views = LocalViews(core)
        self._sock = ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(endpoint)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gradwatch-answers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)
        if not self._thread.is_alive():
            self._sock.close()

    def _run(self) -> None:
        while not self._done.is_set():
            if not self._sock.poll(200):
                continue
            request = self._sock.recv()
            try:
                reply = self.answer(msgpack.unpackb(request))
            except Exception:  # a bad question must not end the worker
                log.exception("worker: could not answer %r", request[:100])
                reply = [500, "internal error"]
            self._sock.send(msgpack.packb(reply))

    def answer(self, request: list[Any]) -> Any:
        """``[question, *arguments]`` → the answer (msgpack-able)."""
        op, *args = request
        views = self.views
        if op == "runs":
            return views.runs(*args).model_dump_json()
        if op == "run":
            detail = views.run(*args)
            return None if detail is None else detail.model_dump_json()
        if op == "series":
            history = views.series(*args)
            return [404, history] if isinstance(history, str) else [200, history.model_dump_json()]
        if op == "metrics":
            part = self.core.registry.part()
            return [part.lines, part.runs, part.health]
        if op == "problems":
            return self.core.problems()
        if op == "stop":
            self.stop_worker.set()
            return "ok"
        raise ValueError(f"unknown question {op!r}")
