"""Grafana dashboards and provisioning: stable uids, PromQL that parses, only exported names."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradwatch.collector.exporter import SPECS
from tests.helpers.stack import GRAFANA_DIR, load, need_binaries

DASHBOARDS = {"overview.json": "gradwatch-overview", "run.json": "gradwatch-run"}
DATASOURCE_UID = "gradwatch-prometheus"
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$run": "r1", "$rank": "0|1"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard(name: str) -> dict[str, Any]:
    return dict(json.loads((GRAFANA_DIR / "dashboards" / name).read_text()))


def exprs(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target, with Grafana variables substituted."""
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
                expr = expr.replace(var, value).replace("${" + var[1:] + "}", value)
            assert "$" not in expr, f"{panel['title']}: unsubstituted variable in {expr}"
            yield panel["title"], expr


def exported_names() -> set[str]:
    names = {s.name for s in SPECS}
    hist = {s.name for s in SPECS if s.type == "histogram"}
    return names | {h + suffix for h in hist for suffix in HISTOGRAM_SUFFIXES}


def test_dashboards_have_stable_uids_and_use_the_provisioned_datasource() -> None:
    ds = load(GRAFANA_DIR / "provisioning/datasources/prometheus.yml")["datasources"]
    assert [d["uid"] for d in ds] == [DATASOURCE_UID]
    for name, uid in DASHBOARDS.items():
        board = dashboard(name)
        assert board["uid"] == uid
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            assert panel["targets"], panel["title"]


def test_run_dashboard_has_run_and_rank_variables() -> None:
    variables = {v["name"]: v for v in dashboard("run.json")["templating"]["list"]}
    assert set(variables) == {"run", "rank"}
    assert variables["rank"]["multi"] and "$run" in variables["rank"]["query"]["query"]


def test_dashboards_cover_the_promised_views() -> None:
    overview = " ".join(e for _, e in exprs(dashboard("overview.json")))
    run = " ".join(e for _, e in exprs(dashboard("run.json")))
    for name in ("loss", "grad_norm", "learning_rate", "tokens_per_second", "memory_bytes",
                 "alerts_firing"):  # fmt: skip
        assert f"gradwatch_{name}" in overview, name
    for name in ("update_ratio", "parameters", "param_grad_norm", "param_update_ratio",
                 "grad_abs"):  # fmt: skip
        assert f"gradwatch_{name}{{" in run, name
    assert 'state="nonfinite"' in run and "not_updated" in run


def test_dashboard_metric_names_are_ones_the_exporter_emits() -> None:
    known = exported_names()
    for name in DASHBOARDS:
        for title, expr in exprs(dashboard(name)):
            for metric in re.findall(r"\bgradwatch_[a-z0-9_]+", expr):
                assert metric in known, f"{name} / {title}: {metric} is not exported"


def test_dashboard_promql_parses_with_promtool(tmp_path: Path) -> None:
    need_binaries("promtool")
    rules = [
        {"record": f"gradwatch_dashboard:{Path(name).stem}:{i}", "expr": expr}
        for name in DASHBOARDS
        for i, (_, expr) in enumerate(exprs(dashboard(name)))
    ]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_provider_path_holds_the_dashboards(name: str) -> None:
    provider = load(GRAFANA_DIR / "provisioning/dashboards/gradwatch.yml")["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"].endswith("/gradwatch")
    assert (GRAFANA_DIR / "dashboards" / name).is_file()
