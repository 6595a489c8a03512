"""Grafana dashboards and provisioning: stable uids, a datasource variable, PromQL that parses and
names only exported series, alert annotations, thresholds equal to the rules' defaults, log axes,
clean tables, and a GPU row whose joins promtool evaluates on known series."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradwatch.collector.metric_specs import SPECS
from gradwatch.collector.rules import CATALOGUE
from tests.helpers.stack import GRAFANA_DIR, load, need_binaries

DASHBOARDS = {"overview.json": "gradwatch-overview", "run.json": "gradwatch-run"}
PROVISIONED_UID = "gradwatch-prometheus"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$run": "r1", "$rank": "0|1"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DCGM_COUNTERS = {
    "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS",
}  # fmt: skip
"""dcgm-exporter's default counters the run dashboard reads (docs/stack.md lists them)."""
THRESHOLDS = {
    ("overview.json", "Silent for (max over ranks)"): [("trainer_silent", "floor_seconds")],
    ("overview.json", "Global grad norm (max over ranks)"): [
        ("vanishing_gradients", "min_norm"), ("grad_explosion", "max_norm")],
    ("run.json", "Global grad norm per rank"): [
        ("vanishing_gradients", "min_norm"), ("grad_explosion", "max_norm")],
    ("run.json", "Update ratio ‖Δw‖/‖w‖ across parameters"): [
        ("update_ratio_low", "min_ratio"), ("update_ratio_high", "max_ratio")],
    ("overview.json", "Memory in use / capacity (max over ranks)"): [("memory_pressure", "ratio")],
    ("run.json", "Memory in use / capacity per rank"): [("memory_pressure", "ratio")],
}  # fmt: skip
"""Panels whose threshold lines are rule defaults: (rule, setting) per step, in value order."""
LOG_AXES = {
    "overview.json": {"Global grad norm (max over ranks)", "Learning rate"},
    "run.json": {"Global grad norm per rank", "Learning rate per group", "|gradient| percentiles",
                 "Update ratio ‖Δw‖/‖w‖ across parameters"},
}  # fmt: skip


def dashboard(name: str) -> dict[str, Any]:
    return dict(json.loads((GRAFANA_DIR / "dashboards" / name).read_text()))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows only group)."""
    return [p for p in board["panels"] if p["type"] != "row"]


def substitute(expr: str) -> str:
    for var, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value).replace("${" + var[1:] + "}", value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def exprs(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel or annotation title, PromQL) for every query, with Grafana variables set."""
    for panel in panels(board):
        for target in panel["targets"]:
            yield panel["title"], substitute(target["expr"])
    for note in board["annotations"]["list"]:
        if "expr" in note:
            yield f"annotation {note['name']}", substitute(note["expr"])


def exported_names() -> set[str]:
    names = {s.name for s in SPECS}
    hist = {s.name for s in SPECS if s.type == "histogram"}
    return names | {h + suffix for h in hist for suffix in HISTOGRAM_SUFFIXES}


def default(rule: str, setting: str) -> Any:
    return getattr(CATALOGUE[rule].settings_type(), setting)


def test_dashboards_have_stable_uids_and_query_through_a_datasource_variable() -> None:
    ds = load(GRAFANA_DIR / "provisioning/datasources/prometheus.yml")["datasources"]
    assert [(d["uid"], d["isDefault"]) for d in ds] == [(PROVISIONED_UID, True)]
    for name, uid in DASHBOARDS.items():
        board = dashboard(name)
        assert board["uid"] == uid
        variables = board["templating"]["list"]
        assert variables[0] == {**variables[0], "name": "datasource", "type": "datasource",
                                "query": "prometheus"}  # fmt: skip
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in panels(board):
            assert panel["targets"], panel["title"]
            sources = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
            assert all(s == DATASOURCE for s in sources), panel["title"]
        for var in variables[1:]:
            assert var["datasource"] == DATASOURCE, var["name"]
        assert PROVISIONED_UID not in json.dumps(board), "importable into any Grafana"


def test_run_dashboard_has_datasource_run_and_rank_variables() -> None:
    variables = {v["name"]: v for v in dashboard("run.json")["templating"]["list"]}
    assert set(variables) == {"datasource", "run", "rank"}
    assert variables["rank"]["multi"] and "$run" in variables["rank"]["query"]["query"]


def test_dashboards_draw_collector_and_stack_alerts_on_every_time_series_panel() -> None:
    for name in DASHBOARDS:
        notes = {n["name"]: n for n in dashboard(name)["annotations"]["list"]}
        collector, stack = notes["gradwatch alerts"], notes["stack alerts"]
        assert "gradwatch_alerts_firing" in collector["expr"] and "ALERTS" in stack["expr"]
        for note in (collector, stack):
            assert note["enable"] and note["datasource"] == DATASOURCE
            assert "filter" not in note, "shown on every panel"
        assert collector["tagKeys"] == "rule,severity,run"


@pytest.mark.parametrize(("name", "title"), sorted(THRESHOLDS))
def test_dashboard_thresholds_are_the_rules_defaults(name: str, title: str) -> None:
    panel = next(p for p in panels(dashboard(name)) if p["title"] == title)
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0]["value"] is None
    assert [s["value"] for s in steps[1:]] == [default(*rs) for rs in THRESHOLDS[(name, title)]]
    if panel["type"] == "timeseries":
        assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    for rule, _ in THRESHOLDS[(name, title)]:
        assert rule in panel["description"], "the description names the rule"


def test_dashboards_use_log_axes_where_values_span_decades() -> None:
    for name, titles in LOG_AXES.items():
        logs = {
            p["title"]
            for p in panels(dashboard(name))
            if p["fieldConfig"]["defaults"]
            .get("custom", {})
            .get("scaleDistribution", {})
            .get("type")
            == "log"
        }
        assert logs == titles, name


def test_dashboard_tables_hide_raw_label_columns() -> None:
    for name in DASHBOARDS:
        for panel in panels(dashboard(name)):
            if panel["type"] != "table":
                continue
            steps = {t["id"]: t["options"] for t in panel.get("transformations", [])}
            hidden = {k for k, v in steps["organize"]["excludeByName"].items() if v}
            assert {"Time", "__name__", "job", "instance"} <= hidden, panel["title"]
            assert all(t.get("format") == "table" and t.get("instant") for t in panel["targets"])


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
    assert DCGM_COUNTERS <= set(re.findall(r"\bDCGM_\w+", run))


def test_dashboard_metric_names_are_ones_the_exporters_emit() -> None:
    known = exported_names()
    for name in DASHBOARDS:
        for title, expr in exprs(dashboard(name)):
            for metric in re.findall(r"\bgradwatch_[a-z0-9_]+", expr):
                assert metric in known, f"{name} / {title}: {metric} is not exported"
            assert set(re.findall(r"\bDCGM_\w+", expr)) <= DCGM_COUNTERS, title


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


# Two hosts: node1 runs ranks 0 and 1 on GPUs 0 and 1 (GPU 2 idle), rank 2 on CPU; node2 is
# another job's. The GPU row must show ranks 0 and 1 with their own GPU's values, and node1's
# three GPUs (not node2's) in the host view.
RANK_INFO = (
    'gradwatch_run_info{{run="r1", rank="{}", host="node1", device="{}", optimizer="AdamW", '
    'torch="2.13.0"{}}}'
)
GPUS = {("node1", "0", "GPU-aaa"): 10, ("node1", "1", "GPU-bbb"): 20,
        ("node1", "2", "GPU-ccc"): 30, ("node2", "0", "GPU-zzz"): 40}  # fmt: skip


def test_gpu_panels_join_dcgm_series_to_ranks_by_uuid_and_host(tmp_path: Path) -> None:
    need_binaries("promtool")
    series = [
        {"series": RANK_INFO.format(0, "cuda:0", ', gpu_uuid="GPU-aaa"'), "values": "1x3"},
        {"series": RANK_INFO.format(1, "cuda:1", ', gpu_uuid="GPU-bbb"'), "values": "1x3"},
        {"series": RANK_INFO.format(2, "cpu", ""), "values": "1x3"},
    ]
    for metric in sorted(DCGM_COUNTERS):
        for (host, gpu, uuid), value in GPUS.items():
            labels = f'gpu="{gpu}", gpu_uuid="{uuid}", host="{host}", modelName="NVIDIA H100"'
            series.append({"series": f"{metric}{{{labels}}}", "values": f"{value}x3"})
    checks = []
    for _title, expr in exprs(dashboard("run.json")):
        if not re.findall(r"\bDCGM_\w+", expr):
            continue
        if "on (host)" in expr:
            node1 = [(h, g, v) for (h, g, _), v in GPUS.items() if h == "node1"]
            want = [(f'{{gpu="{g}", host="{h}"}}', v) for h, g, v in node1]
        else:
            want = [
                (RANK_INFO.format(rank, f"cuda:{rank}", f', gpu_uuid="{uuid}"')
                 .removeprefix("gradwatch_run_info"), GPUS[("node1", str(rank), uuid)])
                for rank, uuid in ((0, "GPU-aaa"), (1, "GPU-bbb"))
            ]  # fmt: skip
        exp = [{"labels": labels, "value": value} for labels, value in want]
        checks.append({"expr": expr.replace('rank=~"0|1"', 'rank=~".*"'), "eval_time": "1m",
                       "exp_samples": exp})  # fmt: skip
    assert len(checks) == 7
    (tmp_path / "none.yml").write_text("groups: []\n")
    test = {"interval": "1m", "input_series": series, "promql_expr_test": checks}
    spec = {"rule_files": ["none.yml"], "evaluation_interval": "1m", "tests": [test]}
    (tmp_path / "gpu_test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run(["promtool", "test", "rules", str(tmp_path / "gpu_test.yml")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_provider_path_holds_the_dashboards(name: str) -> None:
    provider = load(GRAFANA_DIR / "provisioning/dashboards/gradwatch.yml")["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"].endswith("/gradwatch")
    assert (GRAFANA_DIR / "dashboards" / name).is_file()
