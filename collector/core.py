"""The collector's object graph, built in one place: state, rules, alerts, store, fan-out.

``Service`` adds the sockets (ZeroMQ ingest, HTTP) around a :class:`Core`; the API and the
tests take a Core as it is. Nothing else constructs these parts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .alertmanager import AlertmanagerPusher
from .back_channel import BackChannel
from .book import AlertBook
from .config import CollectorConfig
from .console import ConsoleLog
from .engine import Engine
from .exporter import GradwatchRegistry, build_registry
from .fleet import Fleet
from .health import IngestHealth
from .recorder import FlightRecorder, Tape
from .rules import AnyRule, build_rules, overrides
from .rules.system import SilentSettings, TrainerSilent
from .series import SeriesStore
from .shard import Part
from .store import Store
from .stream import AlertStream
from .writer import StoreWriter

log = logging.getLogger(__name__)


@dataclass
class Core:
    """Everything the collector knows and does, without its sockets."""

    config: CollectorConfig
    rules: list[AnyRule]
    store: Store | None
    fleet: Fleet
    book: AlertBook
    health: IngestHealth
    engine: Engine
    stream: AlertStream
    pusher: AlertmanagerPusher | None
    registry: GradwatchRegistry
    series: SeriesStore
    back: BackChannel
    """Firing alerts back to the ranks of their run (sent by the ingest thread)."""
    recorder: FlightRecorder
    """Recent frames per rank; a recording of each firing alert."""
    tape: Tape | None = None
    """Every frame, with ``--record DIR``."""
    writer: StoreWriter | None = None
    """The background writer (the collector process's); None: writes on the ingest thread."""
    part: Part | None = None
    """With ``--workers``: which part of the collector this process is."""

    def close(self) -> int:
        """Stop the fan-out, persist what changed and close the store (after ingest stopped);
        return how many alerts could not be saved (logged)."""
        self.stream.close()
        if self.pusher is not None:
            self.pusher.stop()
        self.recorder.flush()
        if self.tape is not None:
            self.tape.close()
        self.engine.flush()
        if self.writer is not None:
            self.writer.stop()
        unsaved = self.book.unsaved
        if unsaved and self.store is not None:
            log.error(
                "%d alert change(s) could not be saved to %s: %s (they were logged and sent)",
                unsaved, self.store.path, self.store.error,
            )  # fmt: skip
        if self.store is not None:
            self.store.close()
        return unsaved

    def problems(self) -> list[str]:
        """Why the collector is not ready to keep what it is told, for ``/readyz``."""
        out = []
        store = self.store
        if store is not None:
            if not store.writable():
                out.append(f"database {store.path} is not writable")
            elif store.error is not None:
                out.append(f"database {store.path}: the last write failed: {store.error}")
        unsaved = self.book.unsaved
        if unsaved:
            out.append(f"{unsaved} alert change(s) not saved yet (kept in memory, retried)")
        behind = self.health.lagging()
        if behind:
            out.append(behind)
        return out


def build_core(
    config: CollectorConfig,
    rules: list[AnyRule] | None = None,
    *,
    persist: bool = True,
    store: Store | None = None,
    write_behind: bool = False,
    part: Part | None = None,
) -> Core:
    """Wire the parts for ``config``: rules from ``config.config_path`` and ``rules_path``
    unless given, SQLite at ``config.db_path`` when ``persist`` (or ``store`` when given),
    Alertmanager pushing when a URL is set; ``write_behind`` starts a background writer
    (otherwise the ingest thread writes).

    With ``part`` (``--workers``), the main process's book keeps every alert (numbered, saved,
    announced, pushed) and decides only the collector-level ones; a worker's book decides its
    runs' alerts and saves nothing (the main process does), its store holds runs only."""
    if rules is None:
        rules = build_rules(overrides(config.config_path, config.rules_path))
    if store is None and persist:
        store = Store(config.db_path)
    health = IngestHealth()
    worker = part is not None and part.worker is not None
    book = AlertBook(
        None if worker else store,
        origin_seconds=config.origin_window_seconds,
        max_open_alerts=config.max_open_alerts,
        max_resolved=config.max_resolved_alerts,
        on_limit=lambda limit, value, detail: health.hit(limit, value, detail, time.time()),
        judges=None if part is None else part.judges,
    )
    if part is not None:
        book.share_ids(part.id_slot, part.workers + 1)
        if worker and store is not None:
            book.adopt(store)
    if not worker:
        book.subscribe(ConsoleLog())
    silent = next((r.settings for r in rules if isinstance(r, TrainerSilent)), SilentSettings())
    fleet = Fleet(
        max_runs=config.max_runs,
        max_ranks=config.max_ranks,
        max_params=config.max_params,
        silence=silent.limit,
        recall=None if store is None else store.load_run,
    )
    engine = Engine(fleet, book, rules, config, store, health)
    stream = AlertStream(book, config.keepalive_seconds)
    book.subscribe(stream.publish)
    pusher = AlertmanagerPusher(config, book) if config.alertmanager_url and not worker else None
    health.rule_errors.update({rule.name: 0 for rule in rules})  # every rule exported at 0
    registry = build_registry(fleet, book, health, config, notifications=pusher, store=store)
    series = SeriesStore(fleet)  # the page's charts: fed before the rules, pinned by alerts
    engine.frame_listeners.append(series.observe)
    book.subscribe(series.on_alert)
    policies = {rule.name: rule.settings.action for rule in rules}
    back = BackChannel(fleet, policies, config.action_lead_seconds)
    recorder = FlightRecorder(config, rules, fleet, enabled=persist or bool(config.recordings_dir))
    routes_only = part is not None and not worker  # the main process: frames go to workers
    if not routes_only:  # they act on frames
        book.subscribe(back)
        book.subscribe(recorder)
    tape = Tape(config, rules) if config.record and not routes_only else None
    writer = None
    if write_behind and store is not None and not worker:
        writer = engine.writer = StoreWriter(store, book)
        writer.start()
    return Core(
        config, rules, store, fleet, book, health, engine, stream, pusher, registry, series,
        back, recorder, tape, writer, part,
    )  # fmt: skip
