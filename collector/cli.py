"""``gradwatch-collector`` / ``python -m gradwatch.collector``: flags and GRADWATCH_* variables."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .config import LOG_LEVELS, CollectorConfig, split_host_port


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"GRADWATCH_{name}", default)


def parser() -> argparse.ArgumentParser:
    d = CollectorConfig()
    p = argparse.ArgumentParser(
        prog="gradwatch-collector",
        description="Receive gradwatch frames, run the anomaly rules, serve alerts and metrics. "
        "Every flag can also be set with the GRADWATCH_<FLAG> environment variable.",
    )
    p.add_argument("--listen", default=_env("LISTEN", d.listen), help="ZeroMQ endpoint to bind")
    p.add_argument(
        "--http",
        default=_env("HTTP", f"{d.http_host}:{d.http_port}"),
        help="HOST:PORT of the HTTP API and /metrics (port 0: any free port)",
    )
    p.add_argument("--db", default=_env("DB", d.db_path), help="SQLite file for alerts and runs")
    p.add_argument("--rules", default=_env("RULES"), help="YAML/TOML file of rule thresholds")
    p.add_argument("--ready-file", default=_env("READY_FILE"), help="write JSON here when serving")
    p.add_argument("--alertmanager", default=_env("ALERTMANAGER"), help="Alertmanager base URL")
    p.add_argument(
        "--alertmanager-resend",
        type=float,
        default=float(_env("ALERTMANAGER_RESEND", str(d.alertmanager_resend_seconds)) or 0),
        help="seconds between re-sends of firing alerts",
    )
    p.add_argument("--public-url", default=_env("PUBLIC_URL", ""), help="base URL in alert links")
    p.add_argument(
        "--retention-days",
        type=float,
        default=float(_env("RETENTION_DAYS", str(d.retention_days)) or 0),
        help="delete resolved alerts older than this",
    )
    p.add_argument("--topk", type=int, default=int(_env("TOPK", str(d.topk)) or 0))
    p.add_argument(
        "--grace-seconds",
        type=float,
        default=float(_env("GRACE_SECONDS", str(d.grace_seconds)) or 0),
        help="finished runs stop being exported after this",
    )
    p.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", d.log_level),
        choices=[*LOG_LEVELS, *(x.upper() for x in LOG_LEVELS)],
    )
    return p


def config_from_args(args: argparse.Namespace) -> CollectorConfig:
    host, port = split_host_port(args.http, "--http")
    return CollectorConfig(
        listen=args.listen,
        http_host=host,
        http_port=port,
        db_path=args.db,
        rules_path=args.rules or None,
        retention_days=args.retention_days,
        alertmanager_url=args.alertmanager or None,
        alertmanager_resend_seconds=args.alertmanager_resend,
        public_url=args.public_url,
        topk=args.topk,
        grace_seconds=args.grace_seconds,
        log_level=args.log_level.lower(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"gradwatch-collector: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .rules import RulesError
    from .service import Service

    try:
        service = Service(config, ready_file=args.ready_file)
    except (RulesError, OSError, ValueError) as exc:
        print(f"gradwatch-collector: {exc}", file=sys.stderr)
        return 2
    service.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
