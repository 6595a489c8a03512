"""Collector configuration: a frozen dataclass filled by the CLI and ``GRADWATCH_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass

from gradwatch import wire

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")


def split_host_port(value: str, field_name: str) -> tuple[str, int]:
    """``"host:port"`` → ``(host, port)``; raise ValueError naming ``field_name`` otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{field_name} must look like HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class CollectorConfig:
    """Everything the collector process needs to know; validated on construction."""

    listen: str = "tcp://0.0.0.0:5555"
    """ZeroMQ endpoint the PULL socket binds (port 0 or ``*`` picks a free port)."""
    http_host: str = "127.0.0.1"
    """Interface the HTTP API (and /metrics) binds."""
    http_port: int = 8000
    """TCP port of the HTTP API; 0 picks a free port."""
    db_path: str = "gradwatch.db"
    """SQLite file holding alerts and runs (``:memory:`` keeps nothing)."""
    rules_path: str | None = None
    """YAML or TOML file overriding rule thresholds; None uses the defaults."""
    retention_days: float = 30.0
    """Resolved alerts older than this are deleted."""
    max_frame_bytes: int = wire.MAX_FRAME_BYTES
    """Largest accepted frame (ZMQ_MAXMSGSIZE); bigger ones disconnect the sender."""
    rcvhwm: int = 100_000
    """ZeroMQ receive high-water mark, in frames."""
    tick_seconds: float = 1.0
    """Period of the time-based checks (silent trainers, lifecycle timeouts, DB flush)."""
    alertmanager_url: str | None = None
    """Alertmanager base URL (``http://host:9093``); None disables pushing."""
    alertmanager_resend_seconds: float = 30.0
    """How often firing alerts are re-sent to Alertmanager."""
    public_url: str = ""
    """Base URL at which people reach this collector (a proxy's name, not localhost, when the
    collector runs elsewhere): alerts sent to Alertmanager link ``<public_url>/alerts/<id>``
    (``link``) and ``<public_url>/docs/rules.md#<rule>`` (``runbook_url``), and Slack and
    PagerDuty messages show them. Empty derives it from the HTTP address."""
    topk: int = 5
    """How many worst parameters are exported and named in messages."""
    grace_seconds: float = 300.0
    """Finished runs stop being exported (and their open alerts resolve) after this."""
    forget_seconds: float = 3600.0
    """Finished runs are dropped from memory after this (they stay in the database)."""
    keepalive_seconds: float = 15.0
    """Interval of the keep-alive comment on ``/alerts/stream``."""
    log_level: str = "info"
    """Console log level: debug, info, warning, error or critical."""

    def __post_init__(self) -> None:
        if not self.listen.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"listen must be a ZeroMQ endpoint (tcp://...), got {self.listen!r}")
        if not self.http_host:
            raise ValueError("http_host must not be empty")
        if not 0 <= self.http_port <= 65535:
            raise ValueError(f"http_port must be in [0, 65535], got {self.http_port}")
        if not self.db_path:
            raise ValueError("db_path must not be empty")
        for name in ("retention_days", "tick_seconds", "alertmanager_resend_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("grace_seconds", "forget_seconds", "keepalive_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.max_frame_bytes < 1024:
            raise ValueError(f"max_frame_bytes must be at least 1024, got {self.max_frame_bytes}")
        if self.rcvhwm < 1:
            raise ValueError(f"rcvhwm must be positive, got {self.rcvhwm}")
        if self.topk < 1:
            raise ValueError(f"topk must be positive, got {self.topk}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {LOG_LEVELS}, got {self.log_level!r}")
        if self.alertmanager_url is not None and not self.alertmanager_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"alertmanager_url must be an http(s) URL, got {self.alertmanager_url!r}"
            )
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ValueError(f"public_url must be an http(s) URL, got {self.public_url!r}")
        if not self.public_url:
            host = "localhost" if self.http_host in ("0.0.0.0", "::") else self.http_host
            object.__setattr__(self, "public_url", f"http://{host}:{self.http_port}")
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
