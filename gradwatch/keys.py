"""CurveZMQ keys between agents and the collector: the folder layout, written once.

``gradwatch-collector keys --out DIR`` writes, in pyzmq's certificate format::

    DIR/collector/server.key, server.key_secret   the collector's pair   --curve-keys DIR/collector
    DIR/collector/clients/NAME.key                 public keys it accepts
    DIR/NAME/server.key                            the collector's public key
    DIR/NAME/client.key, client.key_secret         agent NAME's pair  GRADWATCH_CURVE_KEYS=DIR/NAME
    DIR/api.token                                  a bearer token for --api-token-file

Secret files are readable by their owner only. Running it again keeps existing keys and adds
the clients it names, so a new team gets its own pair without touching the others. The agent
and the collector both load their keys here; pyzmq is imported only when keys are used.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path

SERVER = "server"
CLIENT = "client"
CLIENTS = "clients"
COLLECTOR = "collector"
TOKEN = "api.token"
MIN_TOKEN_CHARS = 16


class KeysError(ValueError):
    """A key folder that is missing or incomplete; the message says what is wrong."""


def _public(folder: Path, name: str) -> Path:
    return folder / f"{name}.key"


def _secret(folder: Path, name: str) -> Path:
    return folder / f"{name}.key_secret"


def _load(path: Path, hint: str) -> tuple[bytes, bytes | None]:
    """The (public, secret or None) keys of one certificate file; KeysError when unusable."""
    import zmq.auth

    if not path.is_file():
        raise KeysError(f"{path} does not exist ({hint})")
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeysError(f"{path}: not a key file ({exc})") from None


def _pair(folder: Path, name: str) -> tuple[bytes, bytes]:
    """The (public, secret) keys of ``folder/name.key_secret``."""
    path = _secret(folder, name)
    public, secret = _load(path, "made by `gradwatch-collector keys --out DIR`")
    if secret is None:
        raise KeysError(f"{path} holds no secret key")
    return public, secret


def server_keys(folder: str | Path) -> tuple[bytes, bytes, Path]:
    """The collector's (public, secret) keys and the folder of accepted client keys."""
    folder = Path(folder)
    public, secret = _pair(folder, SERVER)
    clients = folder / CLIENTS
    if not clients.is_dir() or not any(clients.glob("*.key")):
        raise KeysError(f"{clients} holds no client public keys (*.key): no agent could connect")
    return public, secret, clients


def client_keys(folder: str | Path) -> tuple[bytes, bytes, bytes]:
    """An agent's (public, secret) keys and the collector's public key."""
    folder = Path(folder)
    public, secret = _pair(folder, CLIENT)
    server, _ = _load(_public(folder, SERVER), "copy the collector's server.key here")
    return public, secret, server


def make_keys(out: str | Path, clients: Sequence[str] = ("trainer",)) -> list[str]:
    """Write what is missing of the layout above under ``out``; return what it wrote."""
    import zmq.auth

    out = Path(out)
    for name in clients:
        if not name or name in (COLLECTOR, CLIENTS) or not name.replace("-", "").isalnum():
            raise KeysError(f"client name {name!r}: use letters, digits and '-'")
    wrote: list[str] = []
    server_dir = out / COLLECTOR
    (server_dir / CLIENTS).mkdir(parents=True, exist_ok=True)
    if not _secret(server_dir, SERVER).exists():
        zmq.auth.create_certificates(server_dir, SERVER)
        wrote.append(f"{_secret(server_dir, SERVER)} (collector: --curve-keys {server_dir})")
    _private(_secret(server_dir, SERVER))
    for name in clients:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        if not _secret(folder, CLIENT).exists():
            zmq.auth.create_certificates(folder, CLIENT)
            wrote.append(f"{_secret(folder, CLIENT)} (agents: GRADWATCH_CURVE_KEYS={folder})")
        _private(_secret(folder, CLIENT))
        _public(folder, SERVER).write_bytes(_public(server_dir, SERVER).read_bytes())
        accepted = _public(server_dir / CLIENTS, name)
        if not accepted.exists():
            accepted.write_bytes(_public(folder, CLIENT).read_bytes())
            wrote.append(f"{accepted} (accepted by the collector)")
    token = out / TOKEN
    if not token.exists():
        token.write_text(secrets.token_urlsafe(32) + "\n")
        wrote.append(f"{token} (HTTP: --api-token-file {token})")
    _private(token)
    return wrote


def read_token(path: str | Path) -> str:
    """The API token in ``path`` (surrounding whitespace ignored); KeysError saying what is
    wrong."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in token):
        raise KeysError(
            f"{path} must hold one token of at least {MIN_TOKEN_CHARS} printable characters "
            "(e.g. from `gradwatch-collector keys --out DIR`)"
        )
    return token


def _private(path: Path) -> None:
    os.chmod(path, 0o600)
