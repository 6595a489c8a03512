"""``gradwatch collector`` / ``gradwatch-collector`` / ``python -m gradwatch.collector``.

One flag, one ``GRADWATCH_*`` variable and one ``[collector]`` key of the config file per field
of :class:`CollectorConfig`, all derived from it; precedence flag > variable > file > default.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from gradwatch.settings import (
    ConfigError,
    add_arguments,
    build,
    file_values,
    gather,
    read_toml,
    settings_of,
    to_toml,
    toml_value,
)

from .config import CollectorConfig
from .logs import configure as configure_logging

SETTINGS = settings_of(CollectorConfig)
TABLE = "collector"
"""The config file's table of collector settings; rules go in ``[rules.<name>]`` tables."""
_CONFIG = next(s for s in SETTINGS if s.field == "config_path")


def parser(prog: str = "gradwatch-collector") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Receive gradwatch frames, run the anomaly rules, serve alerts and metrics. "
        "Every flag can also be set with the GRADWATCH_* variable shown in its help, or as a "
        f"key of the [{TABLE}] table of the --config file (the flag's name with '_' for '-'); "
        "a flag wins over the variable, the variable over the file. "
        "`gradwatch-collector keys --out DIR` writes CurveZMQ keys and an API token.",
    )
    add_arguments(p, SETTINGS)
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings as a config file (each with where it came from) "
        "and the rule overrides, then exit",
    )
    return p


def file_layer(path: str) -> dict[str, tuple[Any, str]]:
    """The ``[collector]`` values of config file ``path``; ConfigError naming a bad key."""
    data = read_toml(path)
    for name in data:
        if name not in (TABLE, "rules"):
            raise ConfigError(f"{path}: {name}", f"unknown table; expected [{TABLE}], [rules.*]")
    return file_values(SETTINGS, data.get(TABLE, {}), f"{path}: {TABLE}")


def gather_config(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> dict[str, tuple[Any, str]]:
    """Every set value with its origin: flags, then ``environ`` (default: the process
    environment), then the config file that a flag or the variable names."""
    env = os.environ if environ is None else environ
    given = vars(args)
    path = given.get(_CONFIG.field) or env.get(_CONFIG.env)
    return gather(SETTINGS, given, env, file_layer(path) if path else None)


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> CollectorConfig:
    """The config from parsed flags, the environment and the config file."""
    return build(CollectorConfig, gather_config(args, environ))


def render_config(
    config: CollectorConfig, gathered: Mapping[str, tuple[Any, str]], rules: Mapping[str, Any]
) -> str:
    """What ``--print-config`` prints: a config file equivalent to the effective settings."""
    origins = {name: origin for name, (_, origin) in gathered.items()}
    head = f"# effective settings; config file: {config.config_path or 'none'}\n"
    out = head + to_toml(SETTINGS, config, TABLE, origins)
    for name, table in rules.items():
        out += f"\n[rules.{name}]\n"
        out += "".join(f"{key} = {toml_value(value)}\n" for key, value in table.items())
    return out


def keys_parser(prog: str = "gradwatch-collector keys") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
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


def keys_main(argv: Sequence[str], prog: str = "gradwatch-collector keys") -> int:
    """``keys --out DIR [--client NAME ...]``: see :func:`gradwatch.keys.make_keys`."""
    from gradwatch.keys import KeysError, make_keys

    args = keys_parser(prog).parse_args(argv)
    try:
        wrote = make_keys(args.out, args.client or ["trainer"])
    except (KeysError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    for line in wrote or [f"{args.out}: every key already exists; nothing written"]:
        print(line)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "gradwatch-collector") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["keys"]:
        return keys_main(argv[1:], f"{prog} keys")
    args = parser(prog).parse_args(argv)
    try:
        gathered = gather_config(args)
        config = build(CollectorConfig, gathered)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    from .rules import RulesError, overrides

    try:
        if args.print_config:
            rules = overrides(config.config_path, config.rules_path)
            sys.stdout.write(render_config(config, gathered, rules))
            return 0
        from .service import Service

        service = Service(config)
    except ConfigError as exc:  # a setting that only fails when used: the db, the ports
        flag = next((x.flag for x in SETTINGS if x.field == exc.where), exc.where)
        print(f"{prog}: {flag}: {exc.message}", file=sys.stderr)
        return 2
    except (RulesError, OSError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    service.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
