"""The flight recorder: recent frames of every rank, written out when an alert fires; and the
full tape (``--record DIR``).

The ingest thread hands each accepted frame to :meth:`FlightRecorder.keep` (a deque append per
rank, the latest hello of each rank kept aside) and calls :meth:`FlightRecorder.tick` on its
clock. When an alert starts firing (a book listener), its recording is due
``recording_after_seconds`` later: then the frames of every rank of its run are taken (in
arrival order) and a writer thread compresses them into ``alert-<id>.gwrec`` in the
recordings folder, deleting the oldest recordings past ``recordings_max_bytes``.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gradwatch import wire

from . import recording
from .alert import Alert
from .config import CollectorConfig
from .fired import FiredOnce
from .fleet import Fleet
from .rules import AnyRule

log = logging.getLogger(__name__)

Kept = tuple[int, float, bytes]
"""(arrival number, collector time, frame bytes)."""


class FlightRecorder:
    """Rings of recent frames per (run, rank); alert recordings written by its own thread."""

    def __init__(
        self, config: CollectorConfig, rules: Iterable[AnyRule], fleet: Fleet, enabled: bool = True
    ) -> None:
        self.config, self.rules, self.fleet = config, list(rules), fleet
        folder = config.recordings_path if enabled else None
        self.folder = None if folder is None else Path(folder)
        self.written = 0
        self.failed = 0
        self._rings: dict[tuple[str, int], deque[Kept]] = {}
        self._hellos: dict[tuple[str, int], Kept] = {}
        self._n = 0
        self._due: list[tuple[float, Alert]] = []
        self._fired = FiredOnce()
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[Path, dict[str, Any], list[recording.Entry]] | None]
        self._jobs = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def path_of(self, alert_id: int) -> Path | None:
        """The recording of an alert, once written."""
        if self.folder is None:
            return None
        path = self.folder / f"alert-{alert_id}{recording.SUFFIX}"
        return path if path.is_file() else None

    # ------------------------------------------------------------------ ingest thread

    def keep(self, frame: wire.Frame, data: bytes, now: float) -> None:
        """An accepted frame: into its rank's ring (a hello also aside, never pushed out)."""
        if self.folder is None:
            return
        self._n += 1
        kept = (self._n, now, data)
        key = (frame.run, frame.rank)
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = deque(maxlen=self.config.recording_frames)
        ring.append(kept)
        if isinstance(frame, wire.Hello):
            self._hellos[key] = kept

    def tick(self, now: float) -> None:
        """Take the recordings that are due; forget the rings of runs that left memory."""
        if self.folder is None:
            return
        with self._lock:
            due = [a for t, a in self._due if t <= now]
            self._due = [(t, a) for t, a in self._due if t > now]
        for alert in due:
            self._take(alert)
        runs = self.fleet.runs
        for key in [k for k in self._rings if k[0] not in runs]:
            del self._rings[key]
            self._hellos.pop(key, None)

    def flush(self, timeout: float = 10.0) -> None:
        """At shutdown: take every recording still due now, and wait for the writer."""
        if self.folder is None:
            return
        with self._lock:
            due, self._due = [a for _, a in self._due], []
        for alert in due:
            self._take(alert)
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)

    def _take(self, alert: Alert) -> None:
        assert self.folder is not None
        kept: dict[int, Kept] = {}
        for (run, _rank), ring in self._rings.items():
            if run == alert.run:
                kept.update((k[0], k) for k in ring)
                hello = self._hellos.get((run, _rank))
                if hello is not None:
                    kept[hello[0]] = hello
        entries = [(t, data) for _, t, data in sorted(kept.values(), key=lambda k: k[0])]
        head = recording.header(self.config, self.rules, dataclasses.asdict(alert))
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_loop, name="gradwatch-recorder")
            self._thread.daemon = True
            self._thread.start()
        self._jobs.put((self.folder / f"alert-{alert.id}{recording.SUFFIX}", head, entries))

    # ------------------------------------------------------------------ book listener

    def __call__(self, alert: Alert) -> None:
        """An alert fired: its recording is due ``recording_after_seconds`` from now."""
        if self.folder is None or not self._fired.first(alert):
            return
        with self._lock:
            self._due.append((time.time() + self.config.recording_after_seconds, alert))

    # ------------------------------------------------------------------ writer thread

    def _write_loop(self) -> None:
        assert self.folder is not None
        while (job := self._jobs.get()) is not None:
            path, head, entries = job
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                recording.write(path, head, entries)
                recording.trim(self.folder, self.config.recordings_max_bytes, "alert-*.gwrec")
                self.written += 1
            except OSError as exc:
                self.failed += 1
                log.error("could not write the recording %s: %s", path, exc)


class Tape:
    """Every accepted frame of every run, to ``tape-<n>.gwrec`` files in a folder, a new file
    past ``record_file_bytes``, the oldest deleted past ``record_max_bytes``."""

    def __init__(self, config: CollectorConfig, rules: Iterable[AnyRule]) -> None:
        assert config.record is not None
        self.folder = Path(config.record)
        self.config = config
        self.head = recording.header(config, rules)
        self.folder.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for p in self.folder.iterdir() if (m := _TAPE.match(p.name))]
        self._next = max(numbers, default=0) + 1
        self._out: recording.Writer | None = None
        self.failed = 0

    def write(self, data: bytes, now: float) -> None:
        """Append one frame (ingest thread); a full disk is counted and logged once."""
        try:
            if self._out is None:
                path = self.folder / f"tape-{self._next:06d}{recording.SUFFIX}"
                self._next += 1
                self._out = recording.Writer(path, self.head)
            self._out.write((now, data))
            if self._out.size >= self.config.record_file_bytes:
                self.close()
                recording.trim(self.folder, self.config.record_max_bytes, "tape-*.gwrec")
        except OSError as exc:
            self.failed += 1
            if self.failed == 1:
                log.error("could not write the tape in %s: %s", self.folder, exc)

    def close(self) -> None:
        if self._out is not None:
            out, self._out = self._out, None
            out.close()


_TAPE = re.compile(r"tape-(\d+)\.gwrec$")
