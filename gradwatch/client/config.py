"""How the ``gradwatch`` commands reach a collector: flags and ``GRADWATCH_*`` variables
derived from :class:`ClientConfig` (see :mod:`gradwatch.settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gradwatch.settings import ConfigError

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class ClientConfig:
    """Where the collector's API is and how to authenticate; validated on construction."""

    url: str = DEFAULT_URL
    """Base URL of the collector's HTTP API."""
    token: str | None = field(default=None, metadata={"env": "GRADWATCH_API_TOKEN"})
    """API token, sent as ``Authorization: Bearer`` (a flag shows in ``ps``: prefer the file)."""
    token_file: str | None = field(default=None, metadata={"env": "GRADWATCH_API_TOKEN_FILE"})
    """File holding the API token (used when no token is given)."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError("url", f"must be an http(s) URL, got {self.url!r}")
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if self.token is None and self.token_file is not None:
            self._read(self.token_file)  # fail now, naming the flag or variable

    @staticmethod
    def _read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError("token_file", f"cannot read {path!r}: {exc.strerror}") from None

    def api_token(self) -> str | None:
        """The token: given, or read from its file."""
        if self.token is None and self.token_file is not None:
            return self._read(self.token_file)
        return self.token
