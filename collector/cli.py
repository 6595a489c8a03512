"""``gradwatch-collector`` / ``python -m gradwatch.collector``: one flag and one ``GRADWATCH_*``
variable per field of :class:`CollectorConfig`, derived from it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from gradwatch.settings import ConfigError, add_arguments, resolve, settings_of

from .config import CollectorConfig
from .logs import configure as configure_logging

SETTINGS = settings_of(CollectorConfig)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradwatch-collector",
        description="Receive gradwatch frames, run the anomaly rules, serve alerts and metrics. "
        "Every flag can also be set with the GRADWATCH_* variable shown in its help; a flag "
        "wins over the variable. `gradwatch-collector keys --out DIR` writes CurveZMQ keys and "
        "an API token.",
    )
    add_arguments(p, SETTINGS)
    return p


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> CollectorConfig:
    """The config from parsed flags, then ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    return resolve(CollectorConfig, SETTINGS, vars(args), env)


def keys_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradwatch-collector keys",
        description="Write CurveZMQ key pairs (pyzmq's certificate format) for the collector "
        "and its agents, and an API token; existing keys are kept. See docs/stack.md.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    p.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="an agent key pair DIR/NAME (repeatable; default: trainer)",
    )
    return p


def keys_main(argv: Sequence[str]) -> int:
    from gradwatch.keys import KeysError, make_keys

    args = keys_parser().parse_args(argv)
    try:
        wrote = make_keys(args.out, args.client or ["trainer"])
    except (KeysError, OSError) as exc:
        print(f"gradwatch-collector keys: {exc}", file=sys.stderr)
        return 2
    for line in wrote or [f"{args.out}: every key already exists; nothing written"]:
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["keys"]:
        return keys_main(argv[1:])
    args = parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"gradwatch-collector: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    from .rules import RulesError
    from .service import Service

    try:
        service = Service(config)
    except ConfigError as exc:  # a setting that only fails when used: the db, the ports
        flag = next((x.flag for x in SETTINGS if x.field == exc.where), exc.where)
        print(f"gradwatch-collector: {flag}: {exc.message}", file=sys.stderr)
        return 2
    except RulesError as exc:
        print(f"gradwatch-collector: --rules: {exc}", file=sys.stderr)
        return 2
    service.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
