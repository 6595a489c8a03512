"""Replay recorded frames through the rule engine, offline: no sockets, no clock.

Each frame is applied at the time the live collector received it (the recording's), through
the same ``Fleet.apply`` → ``Engine.on_frame`` → ``AlertBook`` path as ingest, and the clock
tick runs every ``tick_seconds`` of that time. With the settings a recording was made under,
the frame-driven rules raise the same alerts at the same steps as the live collector did;
time-driven ones (``trainer_silent``) may differ by a tick.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradwatch import wire

from . import recording
from .alert import Alert
from .config import CollectorConfig
from .core import build_core
from .rules import build_rules


@dataclass
class Replayed:
    """What a replay saw and raised."""

    alerts: list[Alert]
    """Every alert that fired (pending ones that never fired are dropped, as live), by onset."""
    frames: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    recorded: list[dict[str, Any]] = field(default_factory=list)
    """The alerts the recordings were made for (alert recordings only)."""


def settings_of(
    head: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[CollectorConfig, dict[str, dict[str, Any]]]:
    """The collector config and rule settings a recording was made under, ``overrides`` (a
    rules file's tables) on top."""
    values = {
        k: v for k, v in head.get("collector", {}).items() if k in recording.REPLAYED_SETTINGS
    }
    config = CollectorConfig(db_path=":memory:", **values)
    rules = {name: dict(table) for name, table in head.get("rules", {}).items()}
    for name, table in (overrides or {}).items():
        rules.setdefault(name, {}).update(table)
    return config, rules


def replay(
    paths: Iterable[str | Path], overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Replayed:
    """Feed the recordings' frames, in order, through a fresh collector core; RecordingError
    for a file that is not a recording, RulesError for bad overrides."""
    opened = [recording.read(p) for p in paths]
    if not opened:
        raise recording.RecordingError("nothing to replay")
    config, rules = settings_of(opened[0][0], overrides)
    core = build_core(config, build_rules(rules), persist=False)
    out = Replayed(alerts=[])
    next_tick: float | None = None
    for head, entries in opened:
        if head.get("alert"):
            out.recorded.append(head["alert"])
        for now, data in entries:
            if next_tick is None:
                next_tick = now + config.tick_seconds
            while now >= next_tick:
                core.engine.tick(next_tick)
                next_tick += config.tick_seconds
            out.frames += 1
            try:
                frame = wire.decode(data)
                state = core.fleet.apply(frame, now)
            except wire.WireError as exc:
                out.rejected[exc.reason] = out.rejected.get(exc.reason, 0) + 1
                continue
            core.engine.on_frame(state, frame, now)
    out.alerts = sorted(core.book.alerts(), key=lambda a: (a.started_at, a.id))
    return out


def describe(alert: Alert | Mapping[str, Any]) -> str:
    """One line per alert: onset step, rule, where, message."""
    a = alert if isinstance(alert, Mapping) else dataclasses.asdict(alert)
    where = f"run={a['run']} rank={a['rank']}"
    if a.get("parameter"):
        where += f" param={a['parameter']}"
    return f"step {a['first_step']:>6}  {a['rule']} [{a['severity']}] {where}: {a['message']}"
