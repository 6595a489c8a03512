"""Which worker process judges a run (``--workers N``): a stable hash of the run's name, read
from a frame without decoding its rows, so that every rank of a run meets in one worker (the
cross-rank rules need them together)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import msgpack

from .alert import COLLECTOR_RUN


def run_of(data: bytes) -> str | None:
    """The ``run`` of an encoded frame (the wire map's second key), reading only the map's
    first entries; None when the bytes are not a frame (the worker will count them)."""
    try:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data) or 1)
        unpacker.feed(data)
        for _ in range(min(unpacker.read_map_header(), 4)):
            key = unpacker.unpack()
            value = unpacker.unpack()
            if key == "run":
                return value if isinstance(value, str) else None
    except Exception:  # noqa: BLE001 - anything unreadable goes to a worker, which rejects it
        return None
    return None


def shard_of(run: str | None, workers: int) -> int:
    """The worker (0 .. workers-1) of ``run``; unreadable frames go to worker 0."""
    if run is None or workers <= 1:
        return 0
    return zlib.crc32(run.encode("utf-8", "surrogatepass")) % workers


@dataclass(frozen=True)
class Part:
    """This process's part of a ``--workers N`` collector: the main process (``worker`` None:
    sockets, HTTP, the alert store, collector-level rules) or worker ``worker`` (its runs'
    fleet, rules and alert lifecycle)."""

    workers: int
    worker: int | None = None

    def judges(self, run: str) -> bool:
        """Whether this process's alert book decides the alerts of ``run``."""
        if run == COLLECTOR_RUN:
            return self.worker is None
        return self.worker is not None and shard_of(run, self.workers) == self.worker

    @property
    def id_slot(self) -> int:
        """Alert ids of this process are ``id_slot + 1 + k * (workers + 1)``."""
        return 0 if self.worker is None else self.worker + 1
