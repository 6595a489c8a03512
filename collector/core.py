"""The collector's object graph, built in one place: state, rules, alerts, store, fan-out.

``Service`` adds the sockets (ZeroMQ ingest, HTTP) around a :class:`Core`; the API and the
tests take a Core as it is. Nothing else constructs these parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from .alertmanager import AlertmanagerPusher
from .book import AlertBook, ConsoleLog
from .config import CollectorConfig
from .engine import Engine
from .exporter import build_registry
from .health import IngestHealth
from .rules import AnyRule, build_rules, overrides
from .series import SeriesStore
from .state import Fleet
from .store import Store
from .stream import AlertStream


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
    registry: CollectorRegistry
    series: SeriesStore

    def close(self) -> None:
        """Stop the fan-out, persist what changed and close the store (after ingest stopped)."""
        self.stream.close()
        if self.pusher is not None:
            self.pusher.stop()
        self.engine.flush()
        if self.store is not None:
            self.store.close()


def build_core(
    config: CollectorConfig, rules: list[AnyRule] | None = None, *, persist: bool = True
) -> Core:
    """Wire the parts for ``config``: rules from ``config.config_path`` and ``rules_path``
    unless given, SQLite at ``config.db_path`` when ``persist``, Alertmanager pushing when a URL
    is set."""
    if rules is None:
        rules = build_rules(overrides(config.config_path, config.rules_path))
    store = Store(config.db_path) if persist else None
    book = AlertBook(store)
    book.subscribe(ConsoleLog())
    fleet, health = Fleet(), IngestHealth()
    engine = Engine(fleet, book, rules, config, store)
    stream = AlertStream(book, config.keepalive_seconds)
    book.subscribe(stream.publish)
    pusher = AlertmanagerPusher(config, book) if config.alertmanager_url else None
    registry = build_registry(fleet, book, health, config, notifications=pusher)
    series = SeriesStore(fleet)  # the page's charts: fed before the rules, pinned by alerts
    engine.frame_listeners.append(series.observe)
    book.subscribe(series.on_alert)
    return Core(config, rules, store, fleet, book, health, engine, stream, pusher, registry, series)
