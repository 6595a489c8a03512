"""``gradwatch-collector`` / ``python -m gradwatch.collector``: one flag and one ``GRADWATCH_*``
variable per field of :class:`CollectorConfig`, derived from it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from gradwatch.settings import ConfigError, add_arguments, resolve, settings_of

from .config import CollectorConfig

SETTINGS = settings_of(CollectorConfig)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradwatch-collector",
        description="Receive gradwatch frames, run the anomaly rules, serve alerts and metrics. "
        "Every flag can also be set with the GRADWATCH_* variable shown in its help; a flag "
        "wins over the variable.",
    )
    add_arguments(p, SETTINGS)
    return p


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> CollectorConfig:
    """The config from parsed flags, then ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    return resolve(CollectorConfig, SETTINGS, vars(args), env)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
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
        service = Service(config)
    except (RulesError, OSError, ValueError) as exc:
        print(f"gradwatch-collector: {exc}", file=sys.stderr)
        return 2
    service.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
