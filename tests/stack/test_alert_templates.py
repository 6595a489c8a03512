"""Every notification template rendered by ``amtool template render`` over groups of 1, 40 and
1,024 alerts (one per parameter) and over one job-level alert of up to 1,024 ranks, against
Slack's and PagerDuty's limits.

Limits, and what they apply to. Alertmanager's Slack notifier posts one legacy *attachment*
(title, text, fallback, buttons), no Block Kit blocks and no top-level ``text``. Slack documents
40,000 characters for a message's text and 3,000 for a section block's text; it documents no
limit for an attachment's text and folds it behind "Show more" past 700 characters. We hold the
attachment text to the strictest documented figure, 3,000, and the whole webhook body to 40,000
(checked on Alertmanager's real POST in test_alertmanager_live). Alertmanager >= 0.26 cuts titles
at 1,024 characters; ours stay under 200 so nothing is cut. PagerDuty Events API v2:
``payload.summary`` at most 1,024 characters, the whole event under 512 KB; Alertmanager replaces
``custom_details`` by an error note when the event is larger, so details are held to 4 KB.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.stack import (
    ALERTMANAGER_DIR,
    GRAFANA_DIR,
    amtool_render,
    collector_alert,
    job_alert,
    load,
    payloads,
    site_template,
    template_data,
)

TEMPLATE_FILE = ALERTMANAGER_DIR / "templates" / "gradwatch.tmpl"
LIST_TEMPLATES = {"gradwatch.where", "gradwatch.parameter_list"}
"""Templates called with a list of alerts (``.Alerts.Firing``); the others take the group."""
SLACK_TEXT_MAX = 3_000
SLACK_TITLE_MAX = 200
SLACK_FALLBACK_MAX = 300
PAGERDUTY_SUMMARY_MAX = 1_024
PAGERDUTY_DETAILS_MAX = 4_096
SEP = "\n=====\n"


def defined() -> list[str]:
    return re.findall(r'{{-? define "([\w.]+)" -?}}', TEMPLATE_FILE.read_text())


def render_all(tmp_path: Path, sent: list[dict[str, Any]], receiver: str) -> dict[str, str]:
    """Every template over one group, in one amtool run: {template name: output}."""
    data = tmp_path / "data.json"
    data.write_text(json.dumps(template_data(sent, receiver)))
    names = defined()
    text = SEP.join(
        f'{{{{ template "{n}" {".Alerts.Firing" if n in LIST_TEMPLATES else "."} }}}}'
        for n in names
    )
    site = site_template(tmp_path, "https://grafana.example", "https://docs.example/gradwatch")
    out = amtool_render(text, data, site).split(SEP)
    return dict(zip(names, out, strict=True))


def per_rank(n: int, **kw: Any) -> list[dict[str, Any]]:
    """``n`` one-rank alerts of one rule and run, one per parameter (``h.0000.w``, ...): alert
    ``i`` is on rank ``i % 8``."""
    return payloads(
        collector_alert(i % 8, id=100 + i, parameter=f"h.{i:04d}.w", **kw) for i in range(n)
    )


def check_limits(out: dict[str, str]) -> None:
    assert len(out["gradwatch.title"]) <= SLACK_TITLE_MAX, out["gradwatch.title"]
    assert len(out["gradwatch.slack.text"]) <= SLACK_TEXT_MAX, len(out["gradwatch.slack.text"])
    assert len(out["gradwatch.slack.fallback"]) <= SLACK_FALLBACK_MAX
    assert len(out["gradwatch.pagerduty.summary"]) <= PAGERDUTY_SUMMARY_MAX
    details = load(ALERTMANAGER_DIR / "alertmanager.yml")["receivers"][2]["pagerduty_configs"][0]
    used = {re.search(r'"(gradwatch\.[\w.]+)"', v) for v in details["details"].values()}
    assert sum(len(out[m.group(1)]) for m in used if m) <= PAGERDUTY_DETAILS_MAX
    for name in ("dashboard_url", "runbook_url", "alert_url", "silence_url"):
        url = out[f"gradwatch.{name}"]
        assert re.fullmatch(r"https?://\S+", url), f"{name}: {url!r}"


def test_every_template_is_rendered_by_these_tests() -> None:
    assert set(defined()) == {
        "gradwatch.grafana_url", "gradwatch.docs_url", "gradwatch.where",
        "gradwatch.parameter_list", "gradwatch.message", "gradwatch.action",
        "gradwatch.measure", "gradwatch.dashboard_url", "gradwatch.runbook_url",
        "gradwatch.alert_url", "gradwatch.silence_url", "gradwatch.title",
        "gradwatch.slack.fallback", "gradwatch.slack.color", "gradwatch.slack.text",
        "gradwatch.pagerduty.summary", "gradwatch.pagerduty.component",
    }  # fmt: skip


def test_templates_for_one_rank_name_it_and_link_to_its_dashboard(tmp_path: Path) -> None:
    out = render_all(tmp_path, per_rank(1), "pagerduty-and-slack")
    check_limits(out)
    assert out["gradwatch.title"] == "[CRITICAL] non_finite on run demo"
    assert "*Firing on:* rank 0\n" in out["gradwatch.slack.text"]
    assert "h.0.attn.c_attn.weight" in out["gradwatch.slack.text"]
    assert "step 360 (first seen at step 358)" in out["gradwatch.slack.text"]
    assert out["gradwatch.dashboard_url"].startswith(
        "https://grafana.example/d/gradwatch-run?var-run=demo&var-rank=0&from="
    )
    assert out["gradwatch.runbook_url"] == "http://localhost:8000/docs/rules.md#non_finite"
    assert out["gradwatch.alert_url"] == "http://localhost:8000/alerts/100"
    assert out["gradwatch.silence_url"] == (
        "http://localhost:9093/#/silences/new?filter="
        "%7Balertname%3D%22non_finite%22%2Crun%3D%22demo%22%7D"
    )
    assert out["gradwatch.pagerduty.component"] == "rank 0"


@pytest.mark.parametrize(("alerts", "more"), [(40, 36), (1024, 1020)])
def test_templates_for_many_alerts_show_four_rank_sets_and_the_description_once(
    tmp_path: Path, alerts: int, more: int
) -> None:
    out = render_all(tmp_path, per_rank(alerts), "pagerduty-and-slack")
    check_limits(out)
    where = f"ranks 0; 1; 2; 3 +{more} more"
    assert out["gradwatch.where"] == where
    text = out["gradwatch.slack.text"]
    assert f"*Firing on:* {where}\n" in text and text.count("loss is nan") == 1
    assert f"_Shown: h.0000.w, the first of {alerts} alerts" in text
    assert out["gradwatch.title"] == f"[CRITICAL] non_finite on run demo ({alerts} firing)"
    assert where in out["gradwatch.pagerduty.summary"]


def test_templates_skip_repeated_rank_sets(tmp_path: Path) -> None:
    sent = payloads(
        collector_alert(
            0, id=100 + i, parameter=f"h.{i:04d}.w", ranks=[0, 1, 2, 3] if i < 5 else [7]
        )
        for i in range(7)
    )
    assert render_all(tmp_path, sent, "slack")["gradwatch.where"] == "ranks 0-3; 7"


def test_templates_for_a_job_alert_show_its_rank_ranges_and_origin(tmp_path: Path) -> None:
    for ranks, shown in (
        (range(40), "ranks 0-39 (origin rank 0)"),
        (range(1024), "ranks 0-1023 (origin rank 0)"),
    ):
        out = render_all(tmp_path, payloads([job_alert(ranks)]), "pagerduty-and-slack")
        check_limits(out)
        assert f"*Firing on:* {shown}\n" in out["gradwatch.slack.text"]
        assert out["gradwatch.title"] == "[CRITICAL] non_finite on run demo"
        assert f", {shown}: loss is nan" in out["gradwatch.pagerduty.summary"]
    scattered = payloads([job_alert(range(0, 2048, 2))])
    out = render_all(tmp_path, scattered, "pagerduty-and-slack")
    check_limits(out)
    assert out["gradwatch.where"] == (
        "ranks 0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30 +1008 more (origin rank 0)"
    )
    moved = payloads([replace(job_alert(range(8)), rank=5)])
    out = render_all(tmp_path, moved, "pagerduty-and-slack")
    assert out["gradwatch.where"] == "ranks 0-7 (origin rank 5)"
    assert out["gradwatch.pagerduty.component"] == "rank 5"
    assert "&var-rank=5&" in out["gradwatch.dashboard_url"]


def test_templates_stay_within_limits_for_the_longest_names_and_messages(tmp_path: Path) -> None:
    sent = payloads(
        collector_alert(r, id=r, run="r" * 256, parameter=f"{r:04d}." + "p" * 1019,
                        message="m" * 9000, ranks=list(range(0, 2048, 2)))
        for r in range(1024)
    )  # fmt: skip
    out = render_all(tmp_path, sent, "pagerduty-and-slack")
    check_limits(out)
    assert out["gradwatch.parameter_list"].endswith(" +1019 more")
    assert out["gradwatch.parameter_list"].count("…") == 5


def test_templates_report_resolved_ranks_and_stack_alerts(tmp_path: Path) -> None:
    sent = per_rank(40)
    for a in sent[20:]:
        a["resolved"] = True
    out = render_all(tmp_path, sent, "slack")
    check_limits(out)
    assert "*Resolved:* ranks" in out["gradwatch.slack.text"]
    down = [{
        "labels": {"alertname": "GradwatchCollectorDown", "severity": "critical",
                   "job": "gradwatch-collector", "instance": "collector:8000"},
        "annotations": {"summary": "gradwatch collector collector:8000 is down",
                        "description": "Prometheus cannot scrape the collector.",
                        "action": "Check the collector container."},
        "startsAt": "2026-11-30T05:00:00Z", "endsAt": "2026-11-30T05:05:00Z",
        "generatorURL": "http://localhost:9090/graph?g0.expr=up",
    }]  # fmt: skip
    out = render_all(tmp_path, down, "pagerduty-and-slack")
    check_limits(out)
    assert out["gradwatch.runbook_url"] == (
        "https://docs.example/gradwatch/stack.md#gradwatchcollectordown"
    )
    assert out["gradwatch.dashboard_url"].startswith(
        "https://grafana.example/d/gradwatch-overview?"
    )
    assert out["gradwatch.pagerduty.component"] == "gradwatch-collector"
    assert out["gradwatch.slack.text"].startswith("Prometheus cannot scrape the collector.\n")


def test_dashboard_links_name_the_dashboards_and_variables_grafana_has() -> None:
    text = TEMPLATE_FILE.read_text()
    assert "gradwatch-run?var-run=" in text and "&var-rank=" in text
    run = json.loads((GRAFANA_DIR / "dashboards/run.json").read_text())
    overview = json.loads((GRAFANA_DIR / "dashboards/overview.json").read_text())
    assert run["uid"] == "gradwatch-run" and "gradwatch-overview?" in text
    assert overview["uid"] == "gradwatch-overview"
    variables = {v["name"] for v in run["templating"]["list"]}
    assert {"run", "rank"} <= variables


def test_site_file_replaces_the_default_urls(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(template_data(per_rank(1), "slack")))
    text = '{{ template "gradwatch.dashboard_url" . }}'
    assert amtool_render(text, data).startswith("http://localhost:3000/d/gradwatch-run?")
    site = site_template(tmp_path, "https://g.example", "https://d.example")
    assert amtool_render(text, data, site).startswith("https://g.example/d/gradwatch-run?")
