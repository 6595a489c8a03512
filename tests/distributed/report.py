"""Measure every job-level scenario on 2 and 4 ranks and print a markdown table: the rule, the
rank it names, the phase or frame it names, and the time from the fault to the alert on the
collector's clock (``python -m tests.distributed.report``; BENCHMARKS.md holds a run)."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from tests.helpers.jobs import RULES, Scenario, collector_for_jobs, run_scenario, scenarios

_NAMED = (
    re.compile(r"stuck in (?:declared phase )?(\w+) .*?: ([^ ]+:\d+ in [\w.<>]+)"),
    re.compile(r" at ([^ ]+:\d+ in [\w.<>]+)"),
    re.compile(r"\((data [^,]+, forward [^)]+)\)"),
    re.compile(r"(weight norms|gradient norms) of"),
    re.compile(r"^(loss is nan)"),
)


def named(message: str) -> str:
    """The phase and frame (or what stands for them) a message names."""
    for pattern in _NAMED:
        match = pattern.search(message)
        if match:
            return ", ".join(match.groups())
    return "-"


def row(sc: Scenario, alert: dict[str, object], seconds: float) -> str:
    ranks = alert["ranks"]
    return (
        f"| {sc.name} | {sc.nproc} | `{alert['rule']}` | {alert['rank']} | {ranks} | "
        f"{named(str(alert['message']))} | {max(seconds, 0.0):.1f} |"
    )


def main() -> int:
    print("settings:", ", ".join(f"{r} {v}" for r, v in RULES.items()), file=sys.stderr)
    lines = [
        "| scenario | ranks | rule | rank named | ranks covered | phase / frame named "
        "| fault → alert (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as work:
        collector = collector_for_jobs(Path(work)).start()
        try:
            for nproc in (2, 4):
                for sc in scenarios(nproc).values():
                    outcome = run_scenario(collector, sc)
                    lines.append(row(sc, outcome.alert, outcome.seconds))
                    print(lines[-1], file=sys.stderr, flush=True)
        finally:
            collector.stop()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
