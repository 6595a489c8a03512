"""A stand-in collector for agent tests: a real ZeroMQ ROUTER socket that decodes frames and
can answer on the back channel, as the collector does."""

from __future__ import annotations

import time
from collections.abc import Callable

import zmq

from gradwatch import wire


class FrameSink:
    """A ROUTER socket bound on loopback (a free port, or ``port``) that decodes what arrives
    and remembers each (run, rank)'s routing identity for :meth:`send_back`."""

    def __init__(self, port: int | None = None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        if port is None:
            self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        else:
            self.sock.bind(f"tcp://127.0.0.1:{port}")
            self.port = port
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.frames: list[wire.Frame] = []
        self.peers: dict[tuple[str, int], bytes] = {}

    def drain(self, until: type, timeout: float = 30.0) -> list[wire.Frame]:
        """Receive frames until one of kind ``until`` arrives; return all received so far.

        Raises TimeoutError when none arrives within ``timeout`` (a bound, not a measurement)."""
        try:
            self.wait_for(lambda frame: isinstance(frame, until), timeout)
        except TimeoutError:
            raise TimeoutError(f"no {until.__name__} frame within {timeout:.0f} s") from None
        return self.frames

    def wait_for(
        self, predicate: Callable[[wire.Frame], bool], timeout: float = 30.0
    ) -> wire.Frame:
        """Receive frames until one satisfies ``predicate`` and return it (all are kept in
        ``frames``). Raises TimeoutError after ``timeout`` (a bound, not a measurement)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sock.poll(50):
                continue
            identity, data = self.sock.recv_multipart()
            frame = wire.decode(data)
            self.peers[frame.run, frame.rank] = identity
            self.frames.append(frame)
            if predicate(frame):
                return frame
        raise TimeoutError(f"no matching frame within {timeout:.0f} s")

    def send_back(self, run: str, rank: int, payload: bytes) -> None:
        """Send ``payload`` to the agent of (run, rank), as the collector's back channel does."""
        self.sock.send_multipart([self.peers[run, rank], payload])

    def of(self, kind: type) -> list[wire.Frame]:
        return [f for f in self.frames if isinstance(f, kind)]

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def free_endpoint() -> str:
    """An endpoint nobody listens on (bind then close to get a free port)."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    s.close(linger=0)
    ctx.term()
    return f"tcp://127.0.0.1:{port}"
