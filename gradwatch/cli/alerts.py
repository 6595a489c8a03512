"""``gradwatch alerts`` (list, or follow the changes) and ``gradwatch ack``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from gradwatch.client import Alert, AlertList, Client

from .output import SEVERITY_COLOURS, STATE_COLOURS, Cell, Table, age

HEADER = ("ID", "STATE", "SEVERITY", "RULE", "RUN", "RANK", "STEP", "PARAMETER", "AGE", "MESSAGE")
FOLLOW_WIDTHS = (4, len("resolved,acked"), len("critical"), 19, 12, 4, 6, 24, 3)
"""Column widths while following: rows printed later rarely need more."""


def row(alert: Alert, now: float) -> list[Cell]:
    """One alert as a table row; AGE is the time since it started."""
    state = alert.state + (",acked" if alert.acked else "")
    return [
        (str(alert.id), ""),
        (state, STATE_COLOURS.get(alert.state, "")),
        (alert.severity, SEVERITY_COLOURS.get(alert.severity, "")),
        (alert.rule, ""),
        (alert.run, ""),
        (str(alert.rank), ""),
        (str(alert.step), ""),
        (alert.parameter or "-", ""),
        (age(alert.started_at, now), ""),
        (alert.message, ""),
    ]


def add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="only this run")
    p.add_argument("--rank", type=int, metavar="N", help="only this rank")
    p.add_argument("--rule", help="only this rule (see `gradwatch rules`)")
    p.add_argument("--severity", help="info, warning, error or critical")
    p.add_argument("--state", help="pending, firing or resolved")


def _page(client: Client, args: argparse.Namespace) -> AlertList:
    return client.alerts(
        run=args.run, rank=args.rank, rule=args.rule, severity=args.severity, state=args.state,
        since=args.since, limit=args.limit,
    )  # fmt: skip


def print_alerts(alerts: Sequence[Alert], as_json: bool, follow: bool = False) -> Table | None:
    """A table of ``alerts``, or one alert JSON per line; the table, to add rows to later."""
    if as_json:
        for alert in alerts:
            sys.stdout.write(alert.to_json().decode() + "\n")
        sys.stdout.flush()
        return None
    table = Table(HEADER)
    if follow:
        table.widths[: len(FOLLOW_WIDTHS)] = FOLLOW_WIDTHS
    elif not alerts:
        print("no alerts", file=sys.stderr)
        return table
    now = time.time()
    table.print([row(a, now) for a in alerts])
    return table


def list_alerts(client: Client, args: argparse.Namespace) -> int:
    if args.follow:
        return follow(client, args)
    page = _page(client, args)
    if args.json:
        print(page.model_dump_json())
    else:
        print_alerts(page.alerts, as_json=False)
    return 0


def follow(client: Client, args: argparse.Namespace) -> int:
    """The current alerts (oldest first), then each change as it happens, until interrupted.

    The stream is connected first and the listing read then; a change the listing already
    showed (same alert, same or older ``seq``) is not printed again."""
    shown: dict[int, int] = {}
    table: Table | None = None
    listed = False
    cursor = -1

    def on_connect(position: int) -> None:
        nonlocal table, listed, cursor
        if position < cursor:
            shown.clear()  # the collector's history was reset: alert ids start again
        cursor = position
        if not listed:
            listed = True
            listing = list(reversed(_page(client, args).alerts))
            shown.update((a.id, a.seq) for a in listing)
            table = print_alerts(listing, args.json, follow=True)

    changes = client.stream(
        run=args.run, rank=args.rank, rule=args.rule, severity=args.severity, state=args.state,
        on_connect=on_connect,
    )  # fmt: skip
    for alert in changes:
        cursor = alert.seq
        if alert.seq <= shown.get(alert.id, -1):
            continue
        shown[alert.id] = alert.seq
        if table is None:
            sys.stdout.write(alert.to_json().decode() + "\n")
            sys.stdout.flush()
        else:
            table.print_row(row(alert, time.time()))
    return 0


def ack(client: Client, args: argparse.Namespace) -> int:
    acked = [client.ack(i) for i in args.ids]
    print_alerts(acked, args.json)
    return 0
