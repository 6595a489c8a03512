"""A stand-in collector for agent tests: a real ZeroMQ PULL socket that decodes frames."""

from __future__ import annotations

import time
from collections.abc import Callable

import zmq

from gradwatch import wire


class FrameSink:
    """A PULL socket bound on loopback (a free port, or ``port``) that decodes what arrives."""

    def __init__(self, port: int | None = None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PULL)
        if port is None:
            self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        else:
            self.sock.bind(f"tcp://127.0.0.1:{port}")
            self.port = port
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.frames: list[wire.Frame] = []

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
            frame = wire.decode(self.sock.recv())
            self.frames.append(frame)
            if predicate(frame):
                return frame
        raise TimeoutError(f"no matching frame within {timeout:.0f} s")

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
