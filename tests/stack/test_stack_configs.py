"""Prometheus and Alertmanager files: checked by their own tools (promtool, amtool) and against
the collector's rule catalogue and docs/stack.md."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gradwatch.collector.rules import CATALOGUE
from tests.helpers.stack import (
    ALERTMANAGER_DIR,
    DEPLOY,
    PROMETHEUS_DIR,
    ROOT,
    load,
    need_binaries,
    render_alertmanager,
)

AM_CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
SEVERITY_RECEIVER = {"critical": "pagerduty-and-slack", "error": "slack", "warning": "slack",
                     "info": "blackhole"}  # fmt: skip


def tool(*cmd: str) -> str:
    need_binaries(cmd[0])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def prometheus_rules() -> Iterator[dict[str, Any]]:
    for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        for group in load(path)["groups"]:
            yield from group["rules"]


def test_prometheus_config_and_rules_pass_promtool_check() -> None:
    tool("promtool", "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    for rules in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        tool("promtool", "check", "rules", str(rules))


def test_prometheus_rules_pass_their_unit_tests() -> None:
    tests = sorted(str(p) for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests
    assert "SUCCESS" in tool("promtool", "test", "rules", *tests)


def test_prometheus_rules_each_have_a_unit_test_a_severity_and_a_runbook_section() -> None:
    tested = "".join(p.read_text() for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    headings = set(re.findall(r"^### (\w+)$", (ROOT / "docs/stack.md").read_text(), re.M))
    for rule in prometheus_rules():
        assert rule["labels"]["severity"] in SEVERITY_RECEIVER
        assert {"summary", "description", "action"} <= set(rule["annotations"])
        assert f"alertname: {rule['alert']}" in tested, rule["alert"]
        # The templates link Prometheus-side alerts to docs/stack.md#<alertname, lower case>.
        assert rule["alert"] in headings, f"docs/stack.md has no '### {rule['alert']}'"


def test_prometheus_rules_do_not_restate_a_collector_rule() -> None:
    """One alert name per condition: a hung rank is the collector's trainer_silent only."""
    camel = {"Gradwatch" + "".join(w.title() for w in name.split("_")) for name in CATALOGUE}
    alerts = {rule["alert"] for rule in prometheus_rules()}
    assert not alerts & camel
    exprs = " ".join(rule["expr"] for rule in prometheus_rules())
    assert "gradwatch_last_frame_timestamp_seconds" not in exprs


def test_alertmanager_config_passes_amtool_check(tmp_path: Path) -> None:
    tool("amtool", "check-config", str(AM_CONFIG))
    tool("amtool", "check-config", str(render_alertmanager(tmp_path, "http://127.0.0.1:9")))


def routed(*labels: str) -> str:
    out = tool("amtool", "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
    return out.splitlines()[0].strip()


def test_alertmanager_routes_every_collector_rule_by_its_severity() -> None:
    for name, cls in CATALOGUE.items():
        assert routed(f"alertname={name}", f"severity={cls.severity}", "run=r1", "rank=0",
                      "job=gradwatch") == SEVERITY_RECEIVER[cls.severity], name  # fmt: skip
    # Findings may lower a rule's severity (loss_spike's z-score warning): routed by the label.
    assert routed("alertname=loss_spike", "severity=warning", "run=r1") == "slack"
    assert routed("alertname=note", "severity=info", "run=r1") == "blackhole"


def test_alertmanager_routes_every_prometheus_rule_by_its_severity() -> None:
    for rule in prometheus_rules():
        severity = rule["labels"]["severity"]
        got = routed(f"alertname={rule['alert']}", f"severity={severity}")
        assert got == SEVERITY_RECEIVER[severity], rule["alert"]


def test_alertmanager_inhibit_rules_name_only_alerts_that_exist() -> None:
    known = set(CATALOGUE) | {rule["alert"] for rule in prometheus_rules()}
    for rule in load(AM_CONFIG)["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            name, op, value = re.fullmatch(r'(\w+)(=~|=)"(.*)"', matcher).groups()  # type: ignore[union-attr]
            if name == "alertname":
                names = value.split("|") if op == "=~" else [value]
                assert set(names) <= known, set(names) - known


def test_alertmanager_reads_secrets_from_compose_secrets_and_commits_none() -> None:
    cfg = AM_CONFIG.read_text()
    assert "hooks.slack.com" not in cfg and "routing_key:" not in cfg
    am = load(AM_CONFIG)
    compose = load(DEPLOY / "docker-compose.yml")
    mounted = {f"/run/secrets/{s}" for s in compose["services"]["alertmanager"]["secrets"]}
    files = {am["global"]["slack_api_url_file"]} | {
        pd["routing_key_file"] for r in am["receivers"] for pd in r.get("pagerduty_configs", [])
    }
    assert files == mounted
    for name in compose["services"]["alertmanager"]["secrets"]:
        assert set(compose["secrets"][name]) == {"environment"}, name  # never a host file


@pytest.mark.parametrize("config", ["slack_configs", "pagerduty_configs"])
def test_alertmanager_receivers_link_runbook_dashboard_alert_and_silence(config: str) -> None:
    receivers = {r["name"]: r for r in load(AM_CONFIG)["receivers"]}
    cfg = receivers["pagerduty-and-slack"][config][0]
    links = cfg["actions"] if config == "slack_configs" else cfg["links"]
    names = {link.get("text") for link in links}
    assert names == {"Runbook", "Dashboard", "Alert", "Silence"}
    if config == "pagerduty_configs":
        assert {"class", "component", "group"} <= set(cfg)
        assert {"firing", "resolved", "num_firing", "num_resolved"} <= set(cfg["details"])
