"""The ``gradwatch`` command: subcommands, the collector connection, errors as one line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from gradwatch import __version__
from gradwatch.settings import ConfigError, add_arguments, resolve, settings_of

EXTRAS = "pip install 'gradwatch[client]' (alerts, runs, ack) or 'gradwatch[collector]'"

Command = Callable[[argparse.Namespace], int]


def _connection() -> argparse.ArgumentParser:
    """The flags (and GRADWATCH_* variables) of :class:`ClientConfig`."""
    from gradwatch.client import ClientConfig

    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p, settings_of(ClientConfig))
    return p


def _with_client(command: Callable[..., int]) -> Command:
    def run(args: argparse.Namespace) -> int:
        from gradwatch.client import Client, ClientConfig

        config = resolve(ClientConfig, settings_of(ClientConfig), vars(args), os.environ)
        with Client.from_config(config) as client:
            return command(client, args)

    return run


def parser() -> argparse.ArgumentParser:
    from . import alerts, demo, recordings, rules, runs

    p = argparse.ArgumentParser(
        prog="gradwatch",
        description="Training-health monitor for PyTorch: the collector, its alerts and runs.",
        epilog="Client commands reach the collector at --url (GRADWATCH_URL). "
        "`gradwatch COMMAND --help` for each command; docs/cli.md for all.",
    )
    p.add_argument("--version", action="version", version=f"gradwatch {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    conn = [_connection()]

    sub.add_parser(
        "collector",
        help="run the collector (all of gradwatch-collector's flags; --config FILE)",
        add_help=False,
    )
    sub.add_parser(
        "keys",
        help="write CurveZMQ keys for the collector and agents, and an API token (--out DIR)",
        add_help=False,
    )
    a = sub.add_parser(
        "alerts",
        parents=conn,
        help="list alerts, or --follow them as they change",
        description="Alerts, newest first: a table on a terminal (coloured unless NO_COLOR), "
        "plain when piped, the API's JSON with --json. --follow prints the current alerts, "
        "then every change as it happens, resuming after a disconnect or a collector restart.",
    )
    alerts.add_filters(a)
    a.add_argument("--since", help="updated at or after: unix seconds or ISO-8601")
    a.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (default 100)")
    a.add_argument("-f", "--follow", action="store_true", help="then print changes as they come")
    a.add_argument("--json", action="store_true", help="the API's JSON (JSON lines with -f)")
    a.set_defaults(handler=_with_client(alerts.list_alerts))

    k = sub.add_parser("ack", parents=conn, help="acknowledge alerts by id")
    k.add_argument("ids", type=int, nargs="+", metavar="ID")
    k.add_argument("--json", action="store_true", help="the acknowledged alerts' JSON, one a line")
    k.set_defaults(handler=_with_client(alerts.ack))

    r = sub.add_parser("runs", parents=conn, help="list runs, or show one run's ranks")
    r.add_argument("name", nargs="?", metavar="RUN", help="show this run, rank by rank")
    r.add_argument("--json", action="store_true", help="the API's JSON")
    r.set_defaults(handler=_with_client(runs.runs))

    u = sub.add_parser("rules", help="list the rules, --check a rules or config file, --docs")
    u.add_argument("--check", metavar="FILE", help="validate a rules file or a config file")
    u.add_argument("--docs", action="store_true", help="print the rules reference (Markdown)")
    u.set_defaults(handler=rules.rules)

    recordings.add_replay(
        sub.add_parser(
            "replay",
            help="replay recorded frames through the rules and print the alerts that fire",
            description="Feed recordings (GET /alerts/ID/recording) or tapes (--record DIR) "
            "through the collector's rules offline, with the settings they were recorded "
            "under, --rules FILE on top: tune a threshold, replay, compare.",
        )
    )
    recordings.add_recording(sub.add_parser("recording", help="show an alert's recording"))

    d = sub.add_parser("demo", help="a collector and a faulty demo training run (needs torch)")
    demo.add_arguments(d)
    d.set_defaults(handler=demo.demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors become one line on stderr and the exit status (1: the collector
    failed to answer; 2: bad flags, variables, files or a missing package)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from gradwatch.client import ClientError

        return _run(argv)
    except ModuleNotFoundError as exc:
        print(f"gradwatch: {exc.name} is not installed: {EXTRAS}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"gradwatch: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"gradwatch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `gradwatch alerts | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(argv: list[str]) -> int:
    if argv[:1] == ["collector"]:  # its own parser: every flag of gradwatch-collector
        from gradwatch.collector.cli import main as collector

        return collector(argv[1:], prog="gradwatch collector")
    if argv[:1] == ["keys"]:  # the same as `gradwatch-collector keys`
        from gradwatch.collector.cli import keys_main

        return keys_main(argv[1:], prog="gradwatch keys")
    p = parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help(sys.stderr)
        return 2
    code: int = args.handler(args)
    return code
