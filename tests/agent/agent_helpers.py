"""Test helpers for the agent tests: a real ZMQ PULL collector socket on a free port."""

from __future__ import annotations

import time

import zmq

from gradwatch import wire


class Collector:
    """A PULL socket bound on a free port that decodes what arrives."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PULL)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.frames: list[wire.Frame] = []

    def drain(self, until: type | None = None, timeout: float = 5.0) -> list[wire.Frame]:
        """Receive frames until one of kind ``until`` arrives (or quiet for 0.3 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sock.poll(300 if until is None else 50):
                if until is None:
                    break
                continue
            frame = wire.decode(self.sock.recv())
            self.frames.append(frame)
            if until is not None and isinstance(frame, until):
                break
        return self.frames

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
