"""The recording format: a gzip stream of msgpack values, a header map then ``[time, frame]``
pairs (the collector's clock when the frame arrived, the frame's bytes as received).

Alert recordings (recorder.py) and the full tape (``--record DIR``) share it, so
``gradwatch replay`` and ``gradwatch recording show`` read both. The header holds the
collector's settings and every rule's settings (so a replay judges as the live collector did)
and, for an alert recording, the alert.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgpack

from .config import CollectorConfig
from .rules import CATALOGUE, AnyRule

FORMAT = "gradwatch-recording"
VERSION = 1
SUFFIX = ".gwrec"
Entry = tuple[float, bytes]
"""(collector time when the frame arrived, the frame's bytes)."""
REPLAYED_SETTINGS: tuple[str, ...] = (
    "tick_seconds", "grace_seconds", "stale_seconds", "topk", "max_runs", "max_ranks",
    "max_params", "max_open_alerts", "max_resolved_alerts", "max_frame_bytes",
)  # fmt: skip
"""The collector settings a replay takes from a recording (the others name files, sockets
and servers of the machine that recorded)."""


class RecordingError(ValueError):
    """A file that is not a readable recording."""


def header(
    config: CollectorConfig, rules: Iterable[AnyRule], alert: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a recording says about how it was made."""
    settings: dict[str, dict[str, Any]] = {name: {"enabled": False} for name in CATALOGUE}
    for rule in rules:
        settings[rule.name] = dataclasses.asdict(rule.settings)
    return {
        "format": FORMAT,
        "version": VERSION,
        "collector": {k: getattr(config, k) for k in REPLAYED_SETTINGS},
        "rules": settings,
        "alert": alert,
    }


class Writer:
    """Appends entries to a new recording file (``close()`` ends it)."""

    def __init__(self, path: Path, head: dict[str, Any]) -> None:
        self.path = path
        self._raw = path.open("xb")
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=3)
        self.size = 0
        """Bytes written so far, before compression (the file grows in compressed blocks)."""
        self.write_value(head)

    def write_value(self, value: Any) -> None:
        self.size += self._gz.write(msgpack.packb(value, use_bin_type=True))

    def write(self, entry: Entry) -> None:
        self.write_value(list(entry))

    def close(self) -> None:
        self._gz.close()
        self._raw.close()


def write(path: Path, head: dict[str, Any], entries: Iterable[Entry]) -> None:
    """Write a whole recording (to a temporary name first: readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    out = Writer(tmp, head)
    try:
        for entry in entries:
            out.write(entry)
    finally:
        out.close()
    os.replace(tmp, path)


def read(path: str | Path) -> tuple[dict[str, Any], Iterator[Entry]]:
    """The header and the entries of a recording; RecordingError if it is none."""
    try:
        stream = gzip.open(path, "rb")
        unpacker = msgpack.Unpacker(stream, raw=False, max_buffer_size=256 << 20)
        head = next(unpacker)
    except (OSError, EOFError, StopIteration, ValueError, msgpack.UnpackException) as exc:
        raise RecordingError(f"{path}: not a gradwatch recording ({exc or 'empty'})") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise RecordingError(f"{path}: not a gradwatch recording")
    if head.get("version") != VERSION:
        raise RecordingError(f"{path}: recording version {head.get('version')!r}, not {VERSION}")

    def entries() -> Iterator[Entry]:
        try:
            for item in unpacker:
                if isinstance(item, list) and len(item) == 2 and isinstance(item[1], bytes):
                    yield float(item[0]), item[1]
        except (OSError, EOFError, ValueError, msgpack.UnpackException):
            return  # a tape cut short (the collector was killed): what was written counts
        finally:
            stream.close()

    return head, entries()


def trim(folder: Path, max_bytes: int, pattern: str = "*" + SUFFIX) -> list[Path]:
    """Delete the oldest files matching ``pattern`` until the rest fit in ``max_bytes``."""
    files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime_ns)
    total = sum(p.stat().st_size for p in files)
    gone = []
    while files and total > max_bytes:
        oldest = files.pop(0)
        total -= oldest.stat().st_size
        oldest.unlink(missing_ok=True)
        gone.append(oldest)
    return gone
