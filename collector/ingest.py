"""The ingest thread: ZeroMQ ROUTER → wire.decode → Fleet.apply → rules → alert book; and
back: firing alerts to the ranks of their run (back_channel.py), on the same socket.

Every message read is counted (``IngestHealth.messages``) and then accepted or rejected by
reason. ZeroMQ's own size limit is set above the decoder's, so an oversized frame is read and
counted instead of silently disconnecting its sender. With CURVE keys, pyzmq's authenticator
admits only the listed client keys; refused handshakes are read from the socket's monitor and
counted. ``stop()`` stops receiving (unbind), handles what was already received until a
deadline, counts the rest as ``shutdown``, flushes, and only then returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from gradwatch import wire
from gradwatch.keys import server_keys

from .back_channel import BackChannel
from .engine import Engine
from .fleet import Fleet
from .health import IngestHealth
from .recorder import FlightRecorder, Tape

log = logging.getLogger(__name__)

SOCKET_LIMIT_FACTOR = 4
"""ZeroMQ's MAXMSGSIZE is this multiple of ``max_frame_bytes``: bigger messages are read and
counted ``oversized``; only beyond this does ZeroMQ drop the connection unseen."""
DRAIN_SECONDS = 2.0
"""At shutdown, messages already received are handled for up to this long, then counted."""
BATCH = 256
"""Messages read from ZeroMQ at a time. A read that finds this many waiting means ingest is
behind: then a stats frame skips the sheddable rules (load shedding) when a newer frame of the
same session is in the batch, or when they judged the rank less than ``SHED_SECONDS`` before
(frame time); full steps are always judged."""
SHED_SECONDS = 1.0
"""While behind, the sheddable rules judge a rank at most once per this many seconds."""
Message = tuple[bytes, bytes | None]
"""A message's payload and its sender's ZeroMQ identity."""
_REFUSALS: dict[int, str] = {
    int(zmq.EVENT_HANDSHAKE_FAILED_AUTH): "auth",
    int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL): "handshake",
    int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL): "handshake",
}
REFUSAL_LOG_SECONDS = 60.0


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
    """Binds the ROUTER socket at construction; ``start()`` runs the loop in a daemon thread.

    Agents connect DEALER sockets (a PUSH of an agent older than the back channel fails the
    ZeroMQ handshake: the socket types do not match)."""

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
        curve_keys: str | Path | None = None,
        back: BackChannel | None = None,
        recorder: FlightRecorder | None = None,
        tape: Tape | None = None,
        socket_type: int = zmq.ROUTER,
        reply: Callable[[bytes, bytes], None] | None = None,
    ) -> None:
        """``socket_type`` PULL with ``reply`` (a ``--workers`` worker): messages come as
        ``[identity, payload]`` from the main process, and actions go back through ``reply``
        instead of the socket."""
        self.fleet, self.engine, self.health = fleet, engine, health
        self._reply = reply
        self.back, self.recorder, self.tape = back, recorder, tape
        self.tick_seconds = tick_seconds
        self.max_frame_bytes = max_frame_bytes
        self._ctx = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._sock = self._ctx.socket(socket_type)
        self._sock.setsockopt(zmq.MAXMSGSIZE, SOCKET_LIMIT_FACTOR * max_frame_bytes)
        self._sock.setsockopt(zmq.SNDHWM, 64)  # per peer; beyond it actions are dropped
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._monitor: zmq.Socket[bytes] | None = None
        try:
            if curve_keys is not None:
                self._monitor = self._sock.get_monitor_socket(self._require_curve(curve_keys))
            self._sock.bind(bind_endpoint(endpoint))
        except BaseException:
            self._close()
            raise
        self.curve = curve_keys is not None
        self.bound = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.endpoint = connectable(self.bound)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gradwatch-ingest", daemon=True)
        self._internal_logged = False
        self._refusal_logged = -1e18

    def _require_curve(self, folder: str | Path) -> int:
        """CURVE server with pyzmq's authenticator; the monitor events to count refusals."""
        public, secret, clients = server_keys(folder)
        self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("zmq.auth"))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(clients))
        self._sock.curve_server = True
        self._sock.curve_publickey = public
        self._sock.curve_secretkey = secret
        return sum(_REFUSALS)

    def start(self) -> None:
        self.health.started_at = time.time()
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop receiving, finish (or count) what was received, flush; True once the thread
        is done (then the socket is closed). False only if a rule hangs past ``timeout``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        elif self._thread.ident is None:  # never started: nothing was received
            self._unbind()
        if self._thread.is_alive():
            log.error("ingest thread still busy after %.0f s; leaving it", timeout)
            return False
        self._close()
        return True

    def _close(self) -> None:
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
        self._sock.close()
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    def _unbind(self) -> None:
        try:
            self._sock.unbind(self.bound)
        except zmq.ZMQError:  # already gone
            pass

    def _run(self) -> None:
        poller = zmq.Poller()
        for sock in (self._sock, self._monitor, *self._also_read()):
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
        next_tick = time.monotonic() + self.tick_seconds
        try:
            while not self._stop.is_set():
                timeout_ms = max(0.0, next_tick - time.monotonic()) * 1000
                ready = dict(poller.poll(int(min(timeout_ms, 200))))
                if self._monitor is not None and self._monitor in ready:
                    self._refusals()
                if self._sock in ready:
                    self._drain(until=lambda: self._stop.is_set())
                self._read_also(ready)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.tick_seconds
                    self._tick()
        finally:
            self._shutdown()

    def _also_read(self) -> list[zmq.Socket[bytes]]:
        """More sockets the loop polls (a subclass's)."""
        return []

    def _read_also(self, ready: dict[Any, int]) -> None:
        """Read those of :meth:`_also_read` that are ``ready``."""

    def _tick(self) -> None:
        """Every ``tick_seconds``: the time-based rules, recordings due, actions due."""
        self._guarded(self.engine.tick)
        if self.recorder is not None:
            self._guarded(lambda: self._recorder_tick())
        self._send_back()

    def _drain(self, until: Callable[[], bool]) -> int:
        """Handle queued messages until none is left or ``until()``; return how many."""
        n = 0
        while not until():
            batch = self._read(BATCH)
            if not batch:
                break
            n += len(batch)
            if len(batch) < BATCH:
                self.health.queued = len(batch)
                for data, identity in batch:
                    self.handle(data, identity)
                    self.health.queued -= 1
                    self._send_back()
                break
            self.handle_batch(batch)
            self._send_back()
        return n

    def _read(self, most: int) -> list[Message]:
        out: list[Message] = []
        while len(out) < most:
            try:
                parts = self._sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            # [identity, payload]; a peer sending several parts sent something malformed
            out.append((parts[1] if len(parts) == 2 else b"", parts[0]))
        return out

    def handle_batch(self, batch: list[Message]) -> None:
        """Messages read while ingest is behind (a full read batch): decode them all, then
        judge each rank's newest stats frame (and every full step) with every rule, the older
        ones with all but the sheddable rules (counted as shed)."""
        health = self.health
        health.queued = len(batch)
        decoded: list[tuple[wire.Frame | None, float]] = []
        for data, _ in batch:
            start = time.perf_counter()
            decoded.append((self._decode(data), time.perf_counter() - start))
        newest = {f.session: i for i, (f, _) in enumerate(decoded) if isinstance(f, wire.Stats)}
        for i, ((frame, spent), (data, identity)) in enumerate(zip(decoded, batch, strict=True)):
            start = time.perf_counter()
            if frame is not None:
                sheddable = isinstance(frame, wire.Stats) and not frame.full
                newer = newest.get(frame.session) != i
                self._take(frame, data, identity, time.time(), sheddable, newer)
            health.latency.observe(spent + time.perf_counter() - start)
            health.queued -= 1
        last = next((f for f, _ in reversed(decoded) if f is not None), None)
        lag = 0.0 if last is None else max(0.0, time.time() - last.time)
        health.behind_at = time.monotonic()
        health.behind = (
            f"ingest is behind: {BATCH}+ messages were waiting, the latest frame read was "
            f"{lag:.1f} s old; per-parameter and trend rules judge each rank's newest frame only"
        )

    def _recorder_tick(self) -> None:
        assert self.recorder is not None
        self.recorder.tick(time.time())

    def _send_back(self) -> None:
        """Send the actions of alerts that fired since the last call (cheap when none)."""
        back = self.back
        if back is not None and back.pending:
            self._guarded(lambda: back.send_due(self._send_to))

    def _send_to(self, identity: bytes, payload: bytes) -> None:
        if self._reply is not None:
            self._reply(identity, payload)
            return
        try:
            self._sock.send_multipart([identity, payload], zmq.NOBLOCK)
        except zmq.ZMQError:  # the peer is gone or its queue is full: the alert stands anyway
            pass

    def _shutdown(self) -> None:
        """Stop receiving; handle what was received until the deadline, count the rest."""
        self._finish_received()
        if self.health.rejected["shutdown"]:
            log.warning(
                "shutdown: %d received frames not handled in %.0f s (counted as shutdown)",
                self.health.rejected["shutdown"],
                DRAIN_SECONDS,
            )
        self._guarded(self.engine.flush)

    def _finish_received(self) -> None:
        """Unbind (peers are disconnected; what is queued stays readable), handle what was
        received until DRAIN_SECONDS pass, count the rest as ``shutdown``."""
        self._unbind()
        deadline = time.monotonic() + DRAIN_SECONDS
        self._drain(until=lambda: time.monotonic() > deadline)
        while True:
            try:
                self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self.health.messages += 1
            self.health.rejected["shutdown"] += 1

    def _refusals(self) -> None:
        """Count peers refused at the handshake (from the monitor socket)."""
        assert self._monitor is not None
        while self._monitor.poll(0):
            event = int.from_bytes(self._monitor.recv_multipart()[0][:2], "little")
            reason = _REFUSALS.get(event)
            if reason is None:
                continue
            self.health.refused_peers[reason] += 1
            now = time.monotonic()
            if now - self._refusal_logged >= REFUSAL_LOG_SECONDS:
                self._refusal_logged = now
                log.warning(
                    "refused a peer at %s (%s): no accepted CURVE key; %d refused so far",
                    self.endpoint,
                    reason,
                    sum(self.health.refused_peers.values()),
                )

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # the ingest loop must never die: log once, keep serving
            self._log_internal()

    def _log_internal(self) -> None:
        if not self._internal_logged:
            self._internal_logged = True
            log.exception("internal error in ingest (logged once)")

    def handle(self, data: bytes, identity: bytes | None = None) -> None:
        """Decode, apply and judge one message; count the outcome (exactly once). One clock
        reading serves the fleet and the rules, as in a replay (replay.py)."""
        start = time.perf_counter()
        now = time.time()
        frame = self._decode(data)
        if frame is not None:
            self._take(frame, data, identity, now)
        self.health.latency.observe(time.perf_counter() - start)

    def _decode(self, data: bytes) -> wire.Frame | None:
        """The frame in ``data``, counted as a message; None (counted) when rejected."""
        self.health.messages += 1
        try:
            if len(data) > self.max_frame_bytes:
                raise wire.WireError("oversized", f"{len(data)} bytes > {self.max_frame_bytes}")
            return wire.decode(data)
        except wire.WireError as exc:
            self._reject(exc)
        except Exception:  # the ingest loop must never die: count, log once, keep serving
            self.health.rejected["internal"] += 1
            self._log_internal()
        return None

    def _reject(self, exc: wire.WireError) -> None:
        self.health.reject(exc, time.time())
        log.debug("rejected frame: %s", exc)

    def _take(
        self,
        frame: wire.Frame,
        data: bytes,
        identity: bytes | None,
        now: float,
        sheddable: bool = False,
        newer: bool = False,
    ) -> None:
        """Apply a decoded frame and judge it at collector time ``now``; a ``sheddable`` one
        (ingest behind) without the sheddable rules when a ``newer`` frame of its session
        waits or they judged the rank less than SHED_SECONDS before."""
        try:
            state = self.fleet.apply(frame, now)
        except wire.WireError as exc:
            self._reject(exc)
            return
        except Exception:  # the ingest loop must never die: count, log once, keep serving
            self.health.rejected["internal"] += 1
            self._log_internal()
            return
        health = self.health
        health.received[type(frame).__name__.lower()] += 1
        health.lag.observe(max(0.0, now - frame.time))
        if identity is not None and self.back is not None:
            self.back.learn(identity, frame)
        if self.recorder is not None:
            self.recorder.keep(frame, data, now)
        if self.tape is not None:
            self.tape.write(data, now)
        shed = sheddable and (newer or frame.time - state.judged_at < SHED_SECONDS)
        health.shed += shed
        self._guarded(lambda: self.engine.on_frame(state, frame, now, shed=shed))
