"""Paths to the deploy/ and grafana/ files, and renderers that point them at test processes.

Rendered copies change only addresses and file paths; everything else is the file compose mounts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTMANAGER_DIR = DEPLOY / "alertmanager"
GRAFANA_DIR = ROOT / "grafana"
COMPOSE = DEPLOY / "docker-compose.yml"
BINARIES = ("promtool", "prometheus", "amtool", "prometheus-alertmanager")


def need_binaries(*names: str) -> None:
    """Skip (or fail under GRADWATCH_REQUIRE_STACK=1) when a Debian binary is missing."""
    missing = [n for n in names or BINARIES if shutil.which(n) is None]
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed (run deploy/install-debian-packages.sh)"
    if os.environ.get("GRADWATCH_REQUIRE_STACK") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def render_alertmanager(out: Path, receiver_url: str, **route_timing: str) -> Path:
    """Copy of alertmanager.yml whose Slack and PagerDuty traffic goes to ``receiver_url``.

    Slack's webhook URL and PagerDuty's routing key are written to files in ``out`` (as the
    secrets directory would hold them); ``route_timing`` overrides group_wait and friends.
    """
    cfg = load(ALERTMANAGER_DIR / "alertmanager.yml")
    (out / "slack-webhook-url").write_text(f"{receiver_url}/slack\n")
    (out / "pagerduty-routing-key").write_text("test-routing-key\n")
    cfg["global"]["slack_api_url_file"] = str(out / "slack-webhook-url")
    cfg["global"]["pagerduty_url"] = f"{receiver_url}/pagerduty"
    for receiver in cfg["receivers"]:
        for pd in receiver.get("pagerduty_configs", []):
            pd["routing_key_file"] = str(out / "pagerduty-routing-key")
    cfg["templates"] = [str(ALERTMANAGER_DIR / t) for t in cfg["templates"]]
    cfg["route"].update(route_timing)
    path = out / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def render_prometheus(out: Path, collector: str, alertmanager: str, interval: str) -> Path:
    """Copy of prometheus.yml scraping ``collector`` (host:port) every ``interval``."""
    cfg = load(PROMETHEUS_DIR / "prometheus.yml")
    cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = interval
    cfg["rule_files"] = [str(PROMETHEUS_DIR / f) for f in cfg["rule_files"]]
    cfg["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    jobs["gradwatch-collector"]["static_configs"] = [{"targets": [collector]}]
    cfg["scrape_configs"] = [jobs["gradwatch-collector"]]
    path = out / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
