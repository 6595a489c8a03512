"""The ingest thread: ZeroMQ PULL → wire.decode → Fleet.apply → rules → alert book."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import zmq

from gradwatch import wire

from .engine import Engine
from .health import IngestHealth
from .state import Fleet

log = logging.getLogger(__name__)


def bind_endpoint(endpoint: str) -> str:
    """ZeroMQ wants ``*`` for "any port": map ``tcp://host:0`` to ``tcp://host:*``."""
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        return endpoint[:-2] + ":*"
    return endpoint


def connectable(endpoint: str) -> str:
    """A bound endpoint as a peer on this host can connect to it (wildcards → loopback)."""
    for wildcard in ("tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard) :]
    return endpoint


class Ingest:
    """Binds the PULL socket at construction; ``start()`` runs the loop in a daemon thread."""

    def __init__(
        self,
        endpoint: str,
        fleet: Fleet,
        engine: Engine,
        health: IngestHealth,
        *,
        max_frame_bytes: int = wire.MAX_FRAME_BYTES,
        rcvhwm: int = 100_000,
        tick_seconds: float = 1.0,
    ) -> None:
        self.fleet, self.engine, self.health = fleet, engine, health
        self.tick_seconds = tick_seconds
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(bind_endpoint(endpoint))
        except zmq.ZMQError:
            self._sock.close()
            self._ctx.term()
            raise
        self.endpoint = connectable(self._sock.getsockopt_string(zmq.LAST_ENDPOINT))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gradwatch-ingest", daemon=True)
        self._internal_logged = False

    def start(self) -> None:
        self.health.started_at = time.time()
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._sock.close()
            self._ctx.term()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        next_tick = time.monotonic() + self.tick_seconds
        try:
            while not self._stop.is_set():
                timeout_ms = max(0.0, next_tick - time.monotonic()) * 1000
                if poller.poll(int(min(timeout_ms, 200))):
                    while True:  # drain what is queued before the next poll
                        try:
                            data = self._sock.recv(zmq.NOBLOCK, copy=True)
                        except zmq.Again:
                            break
                        self.handle(data)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.tick_seconds
                    self._guarded(self.engine.tick)
        finally:
            self._guarded(self.engine.flush)

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # the ingest loop must never die: count, log once, keep serving
            self._internal()

    def _internal(self) -> None:
        self.health.rejected["internal"] += 1
        if not self._internal_logged:
            self._internal_logged = True
            log.exception("internal error in ingest (counted as rejected{reason=internal})")

    def handle(self, data: bytes) -> None:
        """Decode, apply and judge one message; count the outcome."""
        start = time.perf_counter()
        try:
            frame = wire.decode(data)
            state = self.fleet.apply(frame)
        except wire.WireError as exc:
            self.health.rejected[exc.reason] += 1
            log.debug("rejected frame: %s", exc)
        except Exception:  # the ingest loop must never die: count, log once, keep serving
            self._internal()
        else:
            kind = type(frame).__name__.lower()
            self.health.received[kind] += 1
            try:
                self.engine.on_frame(state, frame)
            except Exception:  # same boundary: a rule bug must not stop ingest
                self._internal()
        finally:
            self.health.latency.observe(time.perf_counter() - start)
