"""How the Alertmanager pusher POSTs: httpx with a timeout, TLS options, basic or bearer auth,
and retries with exponential backoff and jitter. Settings are :class:`CollectorConfig` fields."""

from __future__ import annotations

import base64
import random
import ssl
import threading
from pathlib import Path

import httpx

from .config import CollectorConfig

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying; any other error status fails at once (it would again)."""


class AlertmanagerError(Exception):
    """Alertmanager answered with an error status."""


def tls_context(config: CollectorConfig) -> ssl.SSLContext | bool:
    """The TLS verification the config asks for (True: httpx's default trust store)."""
    c = config
    if not (c.alertmanager_ca_file or c.alertmanager_insecure or c.alertmanager_cert_file):
        return True
    context = ssl.create_default_context(cafile=c.alertmanager_ca_file)
    if c.alertmanager_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if c.alertmanager_cert_file:
        context.load_cert_chain(c.alertmanager_cert_file, c.alertmanager_key_file)
    return context


def _read_secret(path: str) -> str:
    return Path(path).read_text().strip()


class HttpPost:
    """``post(url, body)`` for :class:`~gradwatch.collector.alertmanager.AlertmanagerPusher`.

    Retries a failed POST up to ``alertmanager_retries`` times; the delays double from
    ``alertmanager_backoff_seconds`` (capped at the resend interval) with ±50% jitter, and
    ``stop`` cuts them short (then the last error is raised). Secrets are read from their files
    at every POST, so they can be rotated without a restart."""

    def __init__(self, config: CollectorConfig, stop: threading.Event | None = None) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.attempts = 0
        """POSTs tried, retries included."""
        self._client = httpx.Client(
            timeout=config.alertmanager_timeout_seconds, verify=tls_context(config)
        )

    def close(self) -> None:
        self._client.close()

    def _headers(self) -> dict[str, str]:
        c = self.config
        headers = {"Content-Type": "application/json"}
        if c.alertmanager_username is not None and c.alertmanager_password_file is not None:
            pair = f"{c.alertmanager_username}:{_read_secret(c.alertmanager_password_file)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif c.alertmanager_token_file is not None:
            headers["Authorization"] = f"Bearer {_read_secret(c.alertmanager_token_file)}"
        return headers

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        c = self.config
        base = min(c.alertmanager_backoff_seconds * 2**retry, c.alertmanager_resend_seconds)
        return float(base * random.uniform(0.5, 1.5))

    def __call__(self, url: str, body: bytes) -> None:
        """POST ``body``; raise the last error when every try failed."""
        headers = self._headers()
        retries = self.config.alertmanager_retries
        for retry in range(retries + 1):
            self.attempts += 1
            error: Exception
            try:
                response = self._client.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:  # connection refused, timeout, TLS failure
                error = exc
            else:
                if response.status_code < 400:
                    return
                error = AlertmanagerError(f"HTTP {response.status_code}: {response.text[:200]}")
                if response.status_code not in RETRY_STATUS:
                    raise error
            if retry == retries or self.stop.wait(self.delay(retry)):
                raise error
