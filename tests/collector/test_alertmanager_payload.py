"""What the collector sends Alertmanager: the label and annotation contract the templates read."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from gradwatch.collector.alert import Alert
from gradwatch.collector.alertmanager import DASHBOARD_UID
from tests.helpers.stack import job_alert, payloads

PUBLIC_URL = "https://gradwatch.example/"


def make_alert(**kw: Any) -> Alert:
    base = Alert(7, "non_finite", "critical", "firing", "run-a", 3, "h.0.attn.weight", 20,
                 float("nan"), 0.0, "1 parameter(s) with non-finite gradient: h.0.attn.weight",
                 "stop the run", 1000.0, 1000.0, first_step=18)  # fmt: skip
    return replace(base, **kw)


def payload(alert: Alert) -> dict[str, Any]:
    return dict(payloads([alert], public_url=PUBLIC_URL)[0])


def test_payload_links_to_the_alert_and_the_rules_runbook_under_public_url() -> None:
    notes = payload(make_alert())["annotations"]
    assert notes["link"] == "https://gradwatch.example/alerts/7"
    assert notes["runbook_url"] == "https://gradwatch.example/docs/rules.md#non_finite"
    assert notes["first_step"] == "18" and notes["step"] == "20"


def test_payload_links_to_the_run_dashboard_at_its_rank_when_grafana_url_is_set() -> None:
    assert "dashboard_url" not in payload(make_alert())["annotations"]
    sent = payloads([make_alert(run="run a&b")], grafana_url="https://grafana.example/")[0]
    assert sent["annotations"]["dashboard_url"] == (
        "https://grafana.example/d/gradwatch-run?var-run=run+a%26b&var-rank=3&from=-2600000&to=now"
    )


def test_payload_dashboard_uid_is_the_provisioned_run_dashboards() -> None:
    run = Path(__file__).resolve().parents[2] / "grafana" / "dashboards" / "run.json"
    assert json.loads(run.read_text())["uid"] == DASHBOARD_UID


def test_payload_of_a_one_rank_alert_names_its_rank_in_annotations() -> None:
    sent = payload(make_alert())
    assert "rank" not in sent["labels"]
    assert sent["annotations"]["rank"] == sent["annotations"]["ranks"] == "3"
    assert sent["annotations"]["summary"] == "non_finite on run-a rank 3 (h.0.attn.weight)"


def test_payload_of_a_job_alert_sends_its_ranks_compact_and_the_origin_rank() -> None:
    sent = payload(job_alert(range(5, 1029)))
    assert sent["annotations"]["rank"] == "5" and sent["annotations"]["ranks"] == "5-1028"
    assert "ranks 5-1028 (origin rank 5)" in sent["annotations"]["summary"]


def test_payload_labels_stay_the_same_when_the_origin_changes() -> None:
    first = payload(job_alert(range(0, 8)))
    later = payload(replace(job_alert(range(0, 8)), rank=3))
    assert first["labels"] == later["labels"]  # one Alertmanager alert, whoever the origin
    assert (first["annotations"]["rank"], later["annotations"]["rank"]) == ("0", "3")


def test_payload_caps_long_messages_and_leaves_out_empty_annotations() -> None:
    sent = payload(make_alert(message="x" * 5000, first_step=-1, parameter=None, threshold=None))
    notes = sent["annotations"]
    assert len(notes["description"]) == 1000 and notes["description"].endswith("…")
    assert "first_step" not in notes and "threshold" not in notes
    assert "parameter" not in sent["labels"]
