"""Sending frames to a collector over a real ZeroMQ PUSH socket, as an agent would."""

from __future__ import annotations

from collections.abc import Iterable

import zmq

from gradwatch import wire

Keys = tuple[bytes, bytes, bytes]
"""CurveZMQ (public, secret, server public) keys, as ``gradwatch.keys.client_keys`` loads them."""


def push(endpoint: str, frames: Iterable[wire.Frame | bytes], curve: Keys | None = None) -> None:
    """Connect, send every frame (encoded ones as they are), and close once they left."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 30_000)
    sock.setsockopt(zmq.SNDHWM, 0)
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve
    sock.connect(endpoint)
    for frame in frames:
        sock.send(frame if isinstance(frame, bytes) else wire.encode(frame))
    sock.close()
    ctx.term()
