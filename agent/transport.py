"""The sender thread: owns the ZMQ PUSH socket, turns host buffers into wire frames, drops
and counts whatever cannot be sent. The training thread only calls :meth:`Sender.submit`: an
append to a bounded deque, no lock and no wakeup (the thread wakes once per flush window)."""

from __future__ import annotations

import logging
import threading
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

    ``wait`` (e.g. a CUDA event's ``synchronize``) runs first so host buffers are complete.
    ``build(seq, dropped)`` returns the wire frame.
    """

    build: Callable[[int, int], wire.Frame]
    wait: list[Callable[[], Any]] = field(default_factory=list)


_STOP = object()


class Sender:
    """Background thread with a bounded queue; never blocks the caller."""

    def __init__(
        self,
        endpoint: str,
        hello: Callable[[int, int], wire.Hello],
        *,
        hwm: int = 64,
        queue_size: int = 128,
        flush_seconds: float = 0.0,
        on_error: Callable[[BaseException], None] | None = None,
        curve_keys: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._curve = client_keys(curve_keys) if curve_keys else None
        """(public, secret, server public) CurveZMQ keys, when the collector requires them."""
        self._hello = hello
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
        self._hello_due = False
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name="gradwatch-sender", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        return self.dropped_queue + self.dropped_send

    def submit(self, item: Outgoing) -> bool:
        """Enqueue without blocking; a full queue drops the frame and counts it."""
        if len(self._items) >= self._queue_size:
            self.dropped_queue += 1
            return False
        self._items.append(item)
        if self._flush <= 0:
            self._wake.set()
        return True

    def request_hello(self) -> None:
        """Have the sender thread send a fresh hello before the next frame (table changed)."""
        self._hello_due = True

    def close(self, timeout: float) -> None:
        """Flush what is queued (bounded by ``timeout``) and stop the thread."""
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
        sock: zmq.Socket[bytes] = ctx.socket(zmq.PUSH)
        if self._curve is not None:
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = self._curve
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.LINGER, 0)
        mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        try:
            sock.connect(self.endpoint)
            self._send_hello(sock)
            while True:
                self._poll_monitor(mon, sock)
                if not self._send_batch(mon, sock):
                    break
        except Exception as exc:  # pragma: no cover - defensive
            self._report(exc)
        finally:
            sock.disable_monitor()
            mon.close(linger=0)
            sock.close(linger=200)  # a short grace so the final stats and bye leave
            ctx.term()

    def _send_batch(self, mon: zmq.Socket[bytes], sock: zmq.Socket[bytes]) -> bool:
        """Wait for the flush window (or a wakeup), then send everything queued.

        Returns False once the stop marker is reached (after what came before it)."""
        self._wake.wait(self._flush if self._flush > 0 else 0.25)
        self._wake.clear()
        if not self._items:
            return True
        self._poll_monitor(mon, sock)
        while self._items:
            item = self._items.popleft()
            if item is _STOP:
                return False
            if self._hello_due:
                self._send_hello(sock)
            try:
                for wait in item.wait:
                    wait()
                frame = item.build(self._next_seq(), self.dropped)
            except Exception as exc:
                self.dropped_send += 1
                self._report(exc)
                continue
            self._send(sock, frame)
        return True

    def _poll_monitor(self, mon: zmq.Socket[bytes], sock: zmq.Socket[bytes]) -> None:
        """Re-send the hello after every (re)connect, so a restarted collector learns the table."""
        while mon.poll(0):
            parts = mon.recv_multipart()
            event = int.from_bytes(parts[0][:2], "little")
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._hello_due = True
            elif event == zmq.EVENT_DISCONNECTED:
                self._hello_due = False  # no peer to tell; the next handshake makes it due
        if self._hello_due:
            self._send_hello(sock)
