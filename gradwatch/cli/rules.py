"""``gradwatch rules``: the catalogue, a check of a rules or config file, the reference."""

from __future__ import annotations

import argparse
import inspect
import sys

from gradwatch.settings import ConfigError, build, gather, read_toml

from .output import SEVERITY_COLOURS, Table


def check(path: str) -> int:
    """Validate ``path`` as the collector would at start: a config file (a TOML file with a
    ``[collector]`` table: settings and ``[rules.*]``) or a rules file (``--rules``)."""
    from gradwatch.collector.cli import SETTINGS, TABLE, file_layer
    from gradwatch.collector.config import CollectorConfig
    from gradwatch.collector.rules import CATALOGUE, RulesError, build_rules, load, overrides

    try:
        if path.endswith(".toml") and TABLE in read_toml(path):
            config = build(CollectorConfig, gather(SETTINGS, {}, {}, file_layer(path)))
            rules = overrides(path, config.rules_path)
        else:
            rules = load(path)
    except (ConfigError, RulesError) as exc:
        print(f"gradwatch: {exc}", file=sys.stderr)
        return 2
    enabled = len(build_rules(rules))
    changed = ", ".join(sorted(rules)) or "none"
    print(f"{path}: ok; {enabled} of {len(CATALOGUE)} rules enabled; overridden: {changed}")
    return 0


def rules(args: argparse.Namespace) -> int:
    from gradwatch.collector.rules import CATALOGUE
    from gradwatch.collector.rules.docs import render

    if args.check:
        return check(args.check)
    if args.docs:
        sys.stdout.write(render())
        return 0
    table = Table(("RULE", "SEVERITY", "DETECTS"))
    table.print(
        [
            [
                (name, ""),
                (cls.severity, SEVERITY_COLOURS.get(cls.severity, "")),
                ((inspect.getdoc(cls) or "").split("\n")[0], ""),
            ]
            for name, cls in CATALOGUE.items()
        ]
    )
    return 0
