"""The flight recorder's rings and files, the tape's rotation, and the format's rejections."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gradwatch import wire
from gradwatch.collector import recording
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.recorder import Tape
from gradwatch.collector.rules import build_rules
from tests.helpers.fake_rank import FakeRank, Harness


def _feed(h: Harness, frame: wire.Frame) -> None:
    """As ingest does: apply, judge, and keep the frame's bytes."""
    data = wire.encode(frame)
    h.now += 1.0
    state = h.fleet.apply(wire.decode(data), h.now)
    h.core.recorder.keep(frame, data, h.now)
    h.engine.on_frame(state, frame, h.now)


def test_recorder_keeps_the_hello_and_the_latest_frames_of_each_rank(tmp_path: Path) -> None:
    config = CollectorConfig(
        recordings_dir=str(tmp_path), recording_frames=8, recording_after_seconds=0
    )
    h = Harness("non_finite", config=config)
    ranks = [FakeRank("r", 0), FakeRank("r", 1), FakeRank("other", 0)]
    for r in ranks:
        _feed(h, r.hello())
    for step in range(1, 21):
        for r in ranks:
            _feed(h, r.stats(step, loss=math.nan if step == 20 and r.rank == 1 else 2.0))
    [alert] = h.firing("non_finite")
    h.core.recorder.flush()
    path = h.core.recorder.path_of(alert.id)
    assert path is not None
    head, entries = recording.read(path)
    assert head["alert"]["id"] == alert.id and head["rules"]["non_finite"]["enabled"]
    frames = [wire.decode(data) for _, data in entries]
    assert {f.run for f in frames} == {"r"}  # only the alert's run
    for rank in (0, 1):
        mine = [f for f in frames if f.rank == rank]
        assert isinstance(mine[0], wire.Hello)  # kept aside, older than the ring
        assert [f.step for f in mine[1:] if isinstance(f, wire.Stats)] == list(range(13, 21))
    times = [t for t, _ in recording.read(path)[1]]
    assert times == sorted(times)  # arrival order


def test_recorder_is_off_without_a_folder() -> None:
    h = Harness("non_finite")  # no database, no recordings_dir
    assert not h.core.recorder.enabled and h.core.recorder.path_of(1) is None


def test_tape_rotates_by_size_and_deletes_the_oldest(tmp_path: Path) -> None:
    config = CollectorConfig(record=str(tmp_path), record_file_bytes=2048, record_max_bytes=8192)
    tape = Tape(config, build_rules())
    r = FakeRank()
    for step in range(400):
        tape.write(wire.encode(r.stats(step)), float(step))
    tape.close()
    files = sorted(tmp_path.glob("tape-*.gwrec"))
    assert len(files) > 1
    assert sum(p.stat().st_size for p in files) <= 8192 + 2 * 2048
    assert files[0].name != "tape-000001.gwrec"  # the oldest went first
    steps = [wire.decode(d).step for p in files for _, d in recording.read(p)[1]]  # type: ignore[union-attr]
    assert steps == sorted(steps) and steps[-1] == 399


def test_recording_read_rejects_what_is_not_a_recording(tmp_path: Path) -> None:
    for name, data in (("empty", b""), ("text", b"hello"), ("gz", _gzip(b"\x93\x01\x02\x03"))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(recording.RecordingError):
            recording.read(path)


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)
