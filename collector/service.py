"""The collector process: the ZeroMQ and HTTP sockets around a :class:`Core`, signals, the
ready file."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
import zmq

from gradwatch.settings import ConfigError

from .api import create_app
from .config import CollectorConfig
from .core import Core, build_core
from .ingest import Ingest
from .router import Router
from .shard import Part
from .store import StoreError
from .workers import RemoteViews, Workers

log = logging.getLogger(__name__)


def bind_http(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one), handed to uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that do, and without it every
    # keep-alive response waits ~40 ms for the client's delayed ACK (headers, then body).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn that reports when it is serving and exits 0 on SIGTERM/SIGINT."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.service.on_serving()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True  # not recorded: uvicorn would re-raise it after shutdown
        self.service.core.stream.close()


class Service:
    """The collector process. ``serve()`` blocks until a signal, then shuts down cleanly."""

    def __init__(self, config: CollectorConfig) -> None:
        """Bind both sockets and open the store; ConfigError naming the setting that failed."""
        try:
            self.http_sock = bind_http(config.http_host, config.http_port)
        except OSError as exc:
            raise ConfigError("http", f"cannot listen on {config.http}: {exc.strerror}") from None
        try:
            port = int(self.http_sock.getsockname()[1])
            if config.public_url.endswith(":0"):  # derived from port 0: use the real one
                config = dataclasses.replace(config, public_url=config.public_url[:-1] + str(port))
            self.config = config = dataclasses.replace(config, http=f"{config.http_host}:{port}")
            self.workers: Workers | None = None
            part = Part(config.workers) if config.workers > 1 else None
            try:
                self.core = core = build_core(config, write_behind=True, part=part)
            except StoreError as exc:
                raise ConfigError("db_path", str(exc)) from None
            try:
                self.ingest = self._ingest(config, core)
            except zmq.ZMQError as exc:
                self._close_workers()
                core.close()
                raise ConfigError("listen", f"cannot bind {config.listen}: {exc}") from None
            except BaseException:
                self._close_workers()
                core.close()
                raise
        except BaseException:
            self.http_sock.close()
            raise
        views = None if self.workers is None else RemoteViews(self.workers, core)
        self.app = create_app(core, ingest_alive=self.ingest.alive, views=views)
        host = "127.0.0.1" if config.http_host in ("0.0.0.0", "::") else config.http_host
        self.http_url = f"http://{host}:{port}"
        log.info(
            "gradwatch collector: %d rules, ingest %s%s, http %s%s, db %s%s",
            len(core.rules), self.ingest.endpoint, " (CURVE)" if self.ingest.curve else "",
            self.http_url, " (token)" if config.api_token_file else "", config.db_path,
            f", {config.workers} worker processes" if config.workers > 1 else "",
        )  # fmt: skip
        self._warn_if_open()

    def _ingest(self, config: CollectorConfig, core: Core) -> Ingest:
        """The ingest thread: one that judges, or with ``--workers`` one that routes to the
        worker processes (started here)."""
        common: dict[str, Any] = {
            "max_frame_bytes": config.max_frame_bytes,
            "rcvhwm": config.rcvhwm,
            "tick_seconds": config.tick_seconds,
            "curve_keys": config.curve_keys,
        }
        if config.workers == 1:
            return Ingest(
                config.listen, core.fleet, core.engine, core.health, **common,
                back=core.back, recorder=core.recorder, tape=core.tape,
            )  # fmt: skip
        self.workers = Workers(config)
        self.workers.start()
        return Router(
            config.listen, core.fleet, core.engine, core.health, **common,
            workers=self.workers, book=core.book,
        )  # fmt: skip

    def _close_workers(self) -> None:
        if self.workers is not None:
            self.workers.close()

    def _warn_if_open(self) -> None:
        """Say so when anyone beyond this host can send frames or change alerts."""
        config = self.config
        if not config.local_only and config.curve_keys is None:
            log.warning(
                "ZeroMQ listens on %s without CURVE: anyone who reaches it can send frames "
                "(forge alerts, end runs). Use --curve-keys DIR (gradwatch-collector keys "
                "--out DIR), or --listen tcp://127.0.0.1:PORT",
                config.listen,
            )
        local_http = config.http_host in ("localhost", "::1") or config.http_host.startswith("127.")
        if not local_http and config.api_token_file is None:
            log.warning(
                "HTTP listens on %s without --api-token-file: anyone who reaches it can "
                "acknowledge alerts",
                config.http,
            )

    def on_serving(self) -> None:
        """Both sockets are bound and uvicorn serves: announce it."""
        ready = self.config.ready_file
        if ready:
            info = {"listen": self.ingest.endpoint, "http": self.http_url, "pid": os.getpid()}
            tmp = Path(ready + ".tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(ready)

    def serve(self) -> None:
        self.ingest.start()
        if self.core.pusher is not None:
            self.core.pusher.start()
        server = _Server(
            uvicorn.Config(
                self.app,
                log_level="warning",
                timeout_graceful_shutdown=2,
                lifespan="off",
            ),
            self,
        )
        try:
            server.run(sockets=[self.http_sock])
        except (KeyboardInterrupt, asyncio.CancelledError):
            pass
        finally:
            self.close()

    def close(self) -> int:
        """Stop receiving, finish what was received, then flush and close the store, in that
        order; return how many alert changes could not be saved."""
        self.core.stream.close()
        if not self.ingest.stop():
            self.http_sock.close()
            return self.core.book.unsaved  # a rule hangs: closing the store under it would crash
        unsaved = self.core.close()
        self._close_workers()
        self.http_sock.close()
        if self.config.ready_file:
            Path(self.config.ready_file).unlink(missing_ok=True)
        h = self.core.health
        if self.workers is not None:
            h = h.combined(list(self.workers.done.values()))
        rejected = ", ".join(f"{k} {n}" for k, n in sorted(h.rejected.items()) if n) or "none"
        log.info(
            "gradwatch collector stopped: %d messages read, %d accepted, %d rejected (%s)",
            h.messages, sum(h.received.values()), sum(h.rejected.values()), rejected,
        )  # fmt: skip
        return unsaved
