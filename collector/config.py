"""Collector configuration: one frozen dataclass; its fields are the flags and ``GRADWATCH_*``
variables of ``gradwatch-collector`` (see :mod:`gradwatch.settings`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from gradwatch import wire
from gradwatch.keys import KeysError, read_token, server_keys
from gradwatch.settings import ConfigError

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")


def split_host_port(value: str, field_name: str) -> tuple[str, int]:
    """``"host:port"`` → ``(host, port)``; raise ConfigError naming ``field_name`` otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(field_name, f"must look like HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _flag(name: str) -> dict[str, str]:
    """Field metadata giving the flag a name other than the field's."""
    return {"flag": name}


_FILES = (
    "alertmanager_ca_file",
    "alertmanager_cert_file",
    "alertmanager_key_file",
    "alertmanager_password_file",
    "alertmanager_token_file",
)


MAX_WORKERS = 64
"""The most ``--workers`` processes."""


@dataclass(frozen=True)
class CollectorConfig:
    """Everything the collector process needs to know; validated on construction."""

    listen: str = "tcp://127.0.0.1:5555"
    """ZeroMQ endpoint the ROUTER socket binds (port 0 or ``*`` picks a free port). Loopback by
    default: agents on other hosts need e.g. ``tcp://0.0.0.0:5555``, and ``--curve-keys`` on a
    shared network."""
    curve_keys: str | None = None
    """Folder ``DIR/collector`` made by ``gradwatch-collector keys --out DIR``: require
    CurveZMQ and accept only agents whose public key is in its ``clients/``; unset: any peer."""
    http: str = "127.0.0.1:8000"
    """HOST:PORT of the HTTP API and /metrics (port 0 picks a free port)."""
    api_token_file: str | None = None
    """File holding the bearer token every mutating HTTP call (ack) must present as
    ``Authorization: Bearer TOKEN``; unset: no token."""
    api_token_reads: bool = False
    """Require the token on reads too (``/metrics``, ``/healthz``, ``/readyz`` stay open)."""
    db_path: str = field(default="gradwatch.db", metadata=_flag("db"))
    """SQLite file holding alerts and runs (``:memory:`` keeps nothing)."""
    rules_path: str | None = field(default=None, metadata=_flag("rules"))
    """YAML or TOML file overriding rule thresholds; unset uses the defaults."""
    config_path: str | None = field(default=None, metadata={"flag": "config", "file": False})
    """TOML file with a ``[collector]`` table (these settings, by key) and ``[rules.<name>]``
    tables (thresholds, under those of ``--rules``); flags and variables override it."""
    ready_file: str | None = None
    """Write a JSON line (endpoints, pid) here once serving; removed on exit."""
    retention_days: float = 30.0
    """Resolved alerts, and runs last seen, older than this are deleted from the database."""
    max_frame_bytes: int = wire.MAX_FRAME_BYTES
    """Largest accepted frame; bigger ones are counted as ``oversized`` (up to 4x this, beyond
    which ZeroMQ drops the sender's connection before the message is read)."""
    rcvhwm: int = 100_000
    """ZeroMQ receive high-water mark, in frames."""
    workers: int = 1
    """Processes that judge frames (more than one core): runs are spread over them by name, a
    run's ranks stay together; this process keeps the sockets, the API, /metrics and the
    alert store. 1: everything in this process. Needs a database file (not ``:memory:``)."""
    max_runs: int = 1000
    """Runs held in memory; a hello for a new run beyond this evicts the run that ended
    longest ago, or is refused (``collector_limit`` alert)."""
    max_ranks: int = 20_000
    """Ranks held in memory, all runs together; beyond it as ``max_runs``."""
    max_params: int = 50_000
    """Parameters in one hello; a bigger table is refused (``collector_limit`` alert)."""
    max_open_alerts: int = 100
    """Open alerts of one run; further ones are not raised (``collector_limit`` alert)."""
    max_resolved_alerts: int = 10_000
    """Resolved alerts held in memory for the API; older ones stay in the database only."""
    tick_seconds: float = 1.0
    """Period of the time-based checks (silent trainers, lifecycle timeouts, DB flush)."""
    alertmanager_url: str | None = field(default=None, metadata=_flag("alertmanager"))
    """Alertmanager base URL (``http://host:9093``); unset disables pushing."""
    alertmanager_resend_seconds: float = field(default=30.0, metadata=_flag("alertmanager-resend"))
    """How often firing alerts are re-sent to Alertmanager."""
    alertmanager_timeout_seconds: float = field(default=5.0, metadata=_flag("alertmanager-timeout"))
    """Timeout of one POST to Alertmanager (connect, write and read each)."""
    alertmanager_retries: int = 3
    """Retries of a POST that failed (connection error, timeout, HTTP 408/429/5xx) before the
    batch waits for the next resend."""
    alertmanager_backoff_seconds: float = field(default=0.5, metadata=_flag("alertmanager-backoff"))
    """Delay before the first retry; doubles with each retry (at most the resend interval),
    with ±50% random jitter."""
    alertmanager_ca_file: str | None = None
    """PEM file of the CAs trusted for Alertmanager's certificate; unset uses the system's."""
    alertmanager_insecure: bool = False
    """Do not verify Alertmanager's TLS certificate (tests only)."""
    alertmanager_cert_file: str | None = None
    """PEM client certificate for mutual TLS (with its key unless ``alertmanager_key_file``)."""
    alertmanager_key_file: str | None = None
    """PEM private key of ``alertmanager_cert_file``."""
    alertmanager_username: str | None = None
    """User for HTTP basic auth to Alertmanager (password from ``alertmanager_password_file``)."""
    alertmanager_password_file: str | None = None
    """File holding the basic-auth password; read at every POST, so it can be rotated."""
    alertmanager_token_file: str | None = None
    """File holding a bearer token sent to Alertmanager; read at every POST."""
    public_url: str = ""
    """Base URL at which people reach this collector (a proxy's name, not localhost, when it
    runs elsewhere): alerts sent to Alertmanager link ``<public_url>/alerts/<id>`` (``link``) and
    ``<public_url>/docs/rules.md#<rule>`` (``runbook_url``), which Slack and PagerDuty messages
    show. Empty derives it from ``http``."""
    grafana_url: str = ""
    """Base URL of the Grafana that holds the provisioned dashboards: alerts sent to
    Alertmanager then carry ``dashboard_url``, the run dashboard at their run and rank from an
    hour before they started. Empty: no such link (the stack's templates build one from
    ``GRADWATCH_GRAFANA_URL``)."""
    topk: int = 5
    """How many worst parameters are exported and named in messages."""
    grace_seconds: float = 300.0
    """Finished runs stop being exported, their open alerts resolve and they leave memory this
    long after their last frame (``/runs`` keeps showing them from the database)."""
    stale_seconds: float = 86400.0
    """A run none of whose ranks sent anything for this long leaves memory without a ``bye``
    (its alerts resolve)."""
    origin_window_seconds: float = 60.0
    """A rule firing on several ranks of a run for the same cause raises one alert (``ranks``:
    every rank, ``rank``: the origin). For this long after the alert opens, a rank with an
    earlier claim to be the origin (the first whose loss went non-finite, the first to crash, a
    hang's culprit once its stack arrives) takes over ``rank``; then the origin is fixed."""
    keepalive_seconds: float = 15.0
    """Quiet time after which ``/alerts/stream`` sends a keep-alive comment (0: only FastAPI's
    own ping, every 15 s)."""
    log_level: str = "info"
    """Console log level: debug, info, warning, error or critical."""
    action_lead_seconds: float = 2.0
    """A multi-rank run acts on an alert (``stop``, ``checkpoint``) at one step for all its
    ranks: the furthest rank's step plus this many seconds of steps, so every rank has the
    message before it gets there. A single rank acts at once."""
    recording_frames: int = 512
    """Frames kept per rank for the flight recorder: when an alert fires, the frames of every
    rank of its run are written to a recording (``GET /alerts/{id}/recording``); 0: none."""
    recording_after_seconds: float = 10.0
    """A recording is written this long after its alert fired, so it holds what followed."""
    recordings_dir: str | None = None
    """Folder of the alert recordings; unset: ``recordings`` beside the database (none with
    ``--db :memory:``)."""
    recordings_max_bytes: int = 1 << 30
    """Recordings kept, all together; the oldest are deleted first."""
    record: str | None = None
    """Folder to record every frame of every run into (``tape-*.gwrec``, for ``gradwatch
    replay``); unset: no tape."""
    record_file_bytes: int = 64 << 20
    """A tape file is closed and a new one started once this many bytes of frames went into
    it (before compression, which shrinks them several times)."""
    record_max_bytes: int = 1 << 30
    """Tape files kept, all together; the oldest are deleted first."""

    @property
    def http_host(self) -> str:
        return split_host_port(self.http, "http")[0]

    @property
    def http_port(self) -> int:
        return split_host_port(self.http, "http")[1]

    def __post_init__(self) -> None:
        if not self.listen.startswith(("tcp://", "ipc://", "inproc://")):
            raise ConfigError(
                "listen", f"must be a ZeroMQ endpoint (tcp://...), got {self.listen!r}"
            )
        host, port = split_host_port(self.http, "http")
        if not self.db_path:
            raise ConfigError("db_path", "must not be empty")
        for name in ("retention_days", "tick_seconds", "alertmanager_resend_seconds"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")
        for name in (
            "grace_seconds", "stale_seconds", "keepalive_seconds", "origin_window_seconds",
            "action_lead_seconds", "recording_after_seconds", "recording_frames",
        ):  # fmt: skip
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(name, f"must not be negative, got {getattr(self, name)}")
        if self.max_frame_bytes < 1024:
            raise ConfigError(
                "max_frame_bytes", f"must be at least 1024, got {self.max_frame_bytes}"
            )
        for name in (
            "rcvhwm", "topk", "max_runs", "max_ranks", "max_params", "max_open_alerts",
            "max_resolved_alerts", "recordings_max_bytes", "record_file_bytes",
            "record_max_bytes", "workers",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")
        if self.workers > MAX_WORKERS:
            raise ConfigError("workers", f"must be at most {MAX_WORKERS}, got {self.workers}")
        if self.workers > 1 and self.db_path == ":memory:":
            raise ConfigError("workers", "needs a database file (--db), not :memory:")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError("log_level", f"must be one of {LOG_LEVELS}, got {self.log_level!r}")
        object.__setattr__(self, "log_level", self.log_level.lower())
        for name in ("alertmanager_url", "public_url", "grafana_url"):
            url = getattr(self, name)
            if url and not url.startswith(("http://", "https://")):
                raise ConfigError(name, f"must be an http(s) URL, got {url!r}")
        self._check_alertmanager_transport()
        self._check_keys()
        if not self.public_url:
            shown = "localhost" if host in ("0.0.0.0", "::") else host
            object.__setattr__(self, "public_url", f"http://{shown}:{port}")
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

    def _check_alertmanager_transport(self) -> None:
        if self.alertmanager_timeout_seconds <= 0:
            raise ConfigError(
                "alertmanager_timeout_seconds",
                f"must be positive, got {self.alertmanager_timeout_seconds}",
            )
        for name in ("alertmanager_retries", "alertmanager_backoff_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must not be negative, got {getattr(self, name)}")
        for name in _FILES:
            path = getattr(self, name)
            if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                raise ConfigError(name, f"cannot read file {path!r}")
        user, password = self.alertmanager_username, self.alertmanager_password_file
        if (user is None) != (password is None):
            given = "alertmanager_username" if user is not None else "alertmanager_password_file"
            raise ConfigError(given, "basic auth needs both a username and a password file")
        if self.alertmanager_username is not None and self.alertmanager_token_file is not None:
            raise ConfigError("alertmanager_token_file", "use basic auth or a token, not both")
        if self.alertmanager_key_file is not None and self.alertmanager_cert_file is None:
            raise ConfigError("alertmanager_key_file", "needs alertmanager_cert_file")

    def _check_keys(self) -> None:
        """The key folder and the token file must be usable now, not at the first peer."""
        if self.curve_keys is not None:
            try:
                server_keys(self.curve_keys)
            except KeysError as exc:
                raise ConfigError("curve_keys", str(exc)) from None
        if self.api_token_file is not None:
            try:
                read_token(self.api_token_file)
            except KeysError as exc:
                raise ConfigError("api_token_file", str(exc)) from None
        elif self.api_token_reads:
            raise ConfigError("api_token_reads", "needs --api-token-file")

    @property
    def recordings_path(self) -> str | None:
        """Where alert recordings go (None: nowhere)."""
        if self.recordings_dir is not None or self.recording_frames == 0:
            return self.recordings_dir if self.recording_frames else None
        if self.db_path == ":memory:":
            return None
        return os.path.join(os.path.dirname(os.path.abspath(self.db_path)), "recordings")

    @property
    def local_only(self) -> bool:
        """The ZeroMQ socket is reachable from this host only."""
        if not self.listen.startswith("tcp://"):
            return True  # ipc:// and inproc://
        host = self.listen[len("tcp://") :].rpartition(":")[0].strip("[]")
        return host in ("localhost", "::1") or host.startswith("127.")
