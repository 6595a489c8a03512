"""The sender thread: owns the ZMQ DEALER socket, turns host buffers into wire frames, drops
and counts whatever cannot be sent, and reads the collector's action messages (the back
channel) on every wakeup, handing them to ``on_message``. The training thread only calls
:meth:`Sender.submit`: an append to a bounded deque, no lock and no wakeup (the thread wakes
once per flush window)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from gradwatch import wire
from gradwatch.keys import client_keys

log = logging.getLogger(__name__)


@dataclass
class Outgoing:
    """A frame handed from the training thread; ``build`` runs on the sender thread.

    ``ready`` (e.g. a CUDA event's ``query``) must all be true before ``build`` runs, so host
    buffers are complete; the sender polls them instead of waiting, so a hung device never
    stops its heartbeats. ``build(seq, dropped)`` returns the wire frame.
    """

    build: Callable[[int, int], wire.Frame]
    ready: list[Callable[[], bool]] = field(default_factory=list)


@dataclass
class _NewHello:
    """Queued by :meth:`Sender.request_hello`: from here on, hellos come from ``build``."""

    build: Callable[[int, int], wire.Hello]


_STOP = object()


class Sender:
    """Background thread with a bounded queue; never blocks the caller."""

    def __init__(
        self,
        endpoint: str,
        hello: Callable[[int, int], wire.Hello],
        *,
        heartbeat: Callable[[int, int], wire.Heartbeat] | None = None,
        heartbeat_seconds: float = 5.0,
        connect_warn_seconds: float = 10.0,
        who: str = "",
        hwm: int = 64,
        queue_size: int = 128,
        flush_seconds: float = 0.0,
        on_error: Callable[[BaseException], None] | None = None,
        curve_keys: str | None = None,
        on_message: Callable[[bytes], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._on_message = on_message
        """Called on the sender thread with each message the collector sends back."""
        self.received = 0
        """Messages read from the collector (the back channel)."""
        self._curve = client_keys(curve_keys) if curve_keys else None
        """(public, secret, server public) CurveZMQ keys, when the collector requires them."""
        self._hello = hello
        self._heartbeat = heartbeat
        self._beat_every = heartbeat_seconds
        self._warn_after = connect_warn_seconds
        self._tag = f" ({who})" if who else ""
        self._hwm = hwm
        self._flush = flush_seconds
        self._queue_size = queue_size
        self._items: deque[Any] = deque()
        self._wake = threading.Event()
        """Set by close(), and by submit() only when ``flush_seconds`` is 0."""
        self._on_error = on_error
        self.dropped_queue = 0
        """Frames the training thread could not enqueue (queue full)."""
        self.dropped_send = 0
        """Frames the socket would not take (no peer, high-water mark, errors)."""
        self.sent = 0
        self.hellos = 0
        self.heartbeats = 0
        """Heartbeats built (sent or not: with no collector they are dropped uncounted)."""
        self.connected = False
        """A handshake with the collector has succeeded at least once."""
        self.warned = False
        self._closing_by: float | None = None
        """When close() gives up (monotonic), once it was called."""
        self._hello_due = False
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name="gradwatch-sender", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        return self.dropped_queue + self.dropped_send

    def submit(self, item: Outgoing, force: bool = False) -> bool:
        """Enqueue without blocking; a full queue drops the frame and counts it (unless
        ``force``: the final ``bye`` is never dropped here)."""
        if len(self._items) >= self._queue_size and not force:
            self.dropped_queue += 1
            return False
        self._items.append(item)
        if self._flush <= 0:
            self._wake.set()
        return True

    def request_hello(self, build: Callable[[int, int], wire.Hello]) -> None:
        """The parameter table changed: frames queued before this call are sent first, then
        a hello from ``build``, which also answers every later reconnect. Never dropped
        (frames after it would not fit the collector's table)."""
        self._items.append(_NewHello(build))

    def close(self, timeout: float) -> None:
        """Flush what is queued (bounded by ``timeout``) and stop the thread. A process that
        ends before its first handshake (a crash at the first step) waits for one, so that
        its final frames, the ``bye`` above all, are not dropped: for half of ``timeout``, so
        the thread still closes its socket within ``timeout`` (a thread left inside ZeroMQ
        when the interpreter exits can abort the process)."""
        self._closing_by = time.monotonic() + timeout / 2
        self._items.append(_STOP)
        self._wake.set()
        self._thread.join(timeout)  # past it, the daemon thread dies with the process

    # ----------------------------------------------------------------- sender thread only

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _send(self, sock: zmq.Socket[bytes], frame: wire.Frame, count: bool = True) -> bool:
        try:
            sock.send(wire.encode(frame), zmq.NOBLOCK)
            self.sent += 1
            return True
        except zmq.Again:
            self.dropped_send += count
        except Exception as exc:  # never let the socket kill the thread
            self.dropped_send += count
            self._report(exc)
        return False

    def _send_final(self, sock: zmq.Socket[bytes], frame: wire.Frame, deadline: float) -> None:
        """Closing: a frame the socket refuses (a pipe just handshaken may not take messages
        yet) is retried until ``deadline`` before it counts as dropped."""
        while not self._send(sock, frame, count=False):
            if time.monotonic() >= deadline:
                self.dropped_send += 1
                return
            time.sleep(0.005)

    def _send_hello(self, sock: zmq.Socket[bytes]) -> None:
        """Send a hello; while one is due (after a handshake or a table change), a failed
        send leaves it due, so it is retried before the next frame and on every wakeup.

        A hello that finds no peer is not a loss: it is sent again on every connect. But ZeroMQ
        may report a handshake before the new pipe takes messages; giving up then would leave
        the collector rejecting this run's frames until the next reconnect."""
        if self._send(sock, self._hello(self._next_seq(), self.dropped), count=False):
            self.hellos += 1
            self._hello_due = False

    def _report(self, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(exc)

    def _run(self) -> None:
        ctx = zmq.Context()
        sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        if self._curve is not None:
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = self._curve
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_ACTION_BYTES)  # the collector is untrusted too
        sock.setsockopt(zmq.RCVHWM, 64)
        mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        try:
            sock.connect(self.endpoint)
            self._send_hello(sock)
            start = time.monotonic()
            next_beat = start + self._beat_every
            while True:
                self._poll_monitor(mon, sock)
                window = self._flush if self._flush > 0 else 0.25
                wait = min(window, max(next_beat - time.monotonic(), 0.0))
                if not self._send_batch(mon, sock, wait):
                    break
                self._receive(sock)
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self._beat_every
                    self._send_heartbeat(sock)
                if not self.connected and not self.warned and now - start >= self._warn_after:
                    self._warn_unconnected(now - start)
        except Exception as exc:  # pragma: no cover - defensive
            self._report(exc)
        finally:
            sock.disable_monitor()
            mon.close(linger=0)
            sock.close(linger=200)  # a short grace so the final stats and bye leave
            ctx.term()

    def _send_batch(self, mon: zmq.Socket[bytes], sock: zmq.Socket[bytes], wait: float) -> bool:
        """Wait up to ``wait`` seconds (or a wakeup), then send everything queued and ready.

        Returns False once the stop marker is reached (after what came before it)."""
        self._wake.wait(wait)
        self._wake.clear()
        if not self._items:
            return True
        self._poll_monitor(mon, sock)
        if self._closing_by is not None and not self.connected:
            self._await_handshake(mon, sock, self._closing_by)
        while self._items:
            item = self._items.popleft()
            if item is _STOP:
                return False
            if isinstance(item, _NewHello):
                self._hello = item.build
                self._hello_due = True
                self._send_hello(sock)
                continue
            if self._hello_due:
                self._send_hello(sock)
            try:
                if not all(ready() for ready in item.ready):
                    if self._closing_by is None or time.monotonic() < self._closing_by:
                        self._items.appendleft(item)  # the device is not done: next wakeup
                        return True
                    self.dropped_send += 1  # closing, and the device never finished
                    continue
                frame = item.build(self._next_seq(), self.dropped)
            except Exception as exc:
                self.dropped_send += 1
                self._report(exc)
                continue
            if self._closing_by is None:
                self._send(sock, frame)
            else:
                self._send_final(sock, frame, self._closing_by)
        return True

    def _receive(self, sock: zmq.Socket[bytes]) -> None:
        """Read what the collector sent back (never blocks); a bad message is the handler's
        to count, an error of the handler is reported and the rest still read."""
        while True:
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except Exception as exc:
                self._report(exc)
                return
            self.received += 1
            if self._on_message is None:
                continue
            try:
                self._on_message(b"".join(parts))
            except Exception as exc:
                self._report(exc)

    def _send_heartbeat(self, sock: zmq.Socket[bytes]) -> None:
        """A heartbeat (timer-driven, so it goes whatever the training thread does). One that
        finds no collector is not counted as dropped: it carries no data."""
        if self._heartbeat is None:
            return
        try:
            frame = self._heartbeat(self._next_seq(), self.dropped)
        except Exception as exc:
            self._report(exc)
            return
        self.heartbeats += 1
        if self._hello_due:
            self._send_hello(sock)
        self._send(sock, frame, count=False)

    def _warn_unconnected(self, waited: float) -> None:
        self.warned = True
        log.warning(
            "gradwatch%s: no collector reachable at %s after %.0f s; training goes on, but "
            "gradwatch frames are being dropped and counted (monitor.dropped). Is the "
            "collector running and reachable from this host? Point GRADWATCH_ENDPOINT (or "
            "watch(endpoint=...)) at its --listen address.",
            self._tag,
            self.endpoint,
            waited,
        )

    def _await_handshake(
        self, mon: zmq.Socket[bytes], sock: zmq.Socket[bytes], deadline: float
    ) -> None:
        """Closing before any handshake: wait for one until ``deadline`` (never later)."""
        while not self.connected:
            left = deadline - time.monotonic()
            if left <= 0 or not mon.poll(int(left * 1000) + 1):
                return
            self._poll_monitor(mon, sock)

    def _poll_monitor(self, mon: zmq.Socket[bytes], sock: zmq.Socket[bytes]) -> None:
        """Re-send the hello after every (re)connect, so a restarted collector learns the table."""
        while mon.poll(0):
            parts = mon.recv_multipart()
            event = int.from_bytes(parts[0][:2], "little")
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._hello_due = True
                if self.warned and not self.connected:
                    log.info("gradwatch%s: connected to %s after all", self._tag, self.endpoint)
                self.connected = True
            elif event == zmq.EVENT_DISCONNECTED:
                self._hello_due = False  # no peer to tell; the next handshake makes it due
        if self._hello_due:
            self._send_hello(sock)
