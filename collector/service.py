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

import uvicorn

from .api import create_app
from .config import CollectorConfig
from .core import build_core
from .ingest import Ingest

log = logging.getLogger(__name__)


def bind_http(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one), handed to uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
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
        self.http_sock = bind_http(config.http_host, config.http_port)
        try:
            port = int(self.http_sock.getsockname()[1])
            if config.public_url.endswith(":0"):  # derived from port 0: use the real one
                config = dataclasses.replace(config, public_url=config.public_url[:-1] + str(port))
            self.config = config = dataclasses.replace(config, http=f"{config.http_host}:{port}")
            self.core = core = build_core(config)
            self.ingest = Ingest(
                config.listen,
                core.fleet,
                core.engine,
                core.health,
                max_frame_bytes=config.max_frame_bytes,
                rcvhwm=config.rcvhwm,
                tick_seconds=config.tick_seconds,
            )
        except BaseException:
            self.http_sock.close()
            raise
        self.app = create_app(core, ingest_alive=self.ingest.alive)
        host = "127.0.0.1" if config.http_host in ("0.0.0.0", "::") else config.http_host
        self.http_url = f"http://{host}:{port}"
        log.info(
            "gradwatch collector: %d rules, ingest %s, http %s, db %s",
            len(core.rules), self.ingest.endpoint, self.http_url, config.db_path,
        )  # fmt: skip

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

    def close(self) -> None:
        self.core.stream.close()
        self.ingest.stop()
        self.core.close()
        self.http_sock.close()
        if self.config.ready_file:
            Path(self.config.ready_file).unlink(missing_ok=True)
        log.info("gradwatch collector stopped")
