"""Every metric key the rules and the exporter read is in the wire vocabulary."""

from __future__ import annotations

import dataclasses
from typing import Any

from prometheus_client import generate_latest

from gradwatch import wire
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.exporter import build_registry
from gradwatch.collector.health import IngestHealth
from tests.helpers.fake_rank import FakeRank, Harness


class ReadRecorder(dict[str, float]):
    """A metrics map that records every key read from it."""

    read: set[str]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> float:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def test_vocabulary_rules_and_exporter_read_only_wire_metric_keys() -> None:
    h, r = Harness(), FakeRank("vocab")
    h.send(r.hello())
    recorder = ReadRecorder()
    for step in range(1, 40):
        h.send(r.stats(step, full=step % 5 == 0))
        state = h.fleet.rank("vocab", 0)
        assert state is not None and state.stats is not None
        recorder.update(state.stats.metrics)
        state.stats = dataclasses.replace(state.stats, metrics=recorder)
        state.full_metrics = recorder
        h.engine.on_frame(state, state.stats, h.now)
    generate_latest(build_registry(h.fleet, h.book, IngestHealth(), CollectorConfig()))
    assert recorder.read, "nothing was read: the recorder is not in the path"
    assert recorder.read <= set(wire.METRICS), recorder.read - set(wire.METRICS)
