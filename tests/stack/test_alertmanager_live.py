"""The repository's alertmanager.yml in a real ``prometheus-alertmanager``: inhibit rules checked
with ``amtool``, and what Alertmanager really POSTs to Slack and PagerDuty for a group of 1,024
ranks (a local receiver stands in for both). Limits: see test_alert_templates.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.processes import stop_process
from tests.helpers.stack import (
    Receiver,
    collector_alert,
    job_alert,
    need_binaries,
    payloads,
    render_alertmanager,
    site_template,
    start_alertmanager,
)
from tests.helpers.waiting import free_port, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]
SLACK_MESSAGE_MAX = 40_000
PAGERDUTY_EVENT_MAX = 512_000
PAGERDUTY_SUMMARY_MAX = 1_024
SLACK_TEXT_MAX = 3_000


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[str]:
    """A real Alertmanager with the repository's config; yields its URL."""
    need_binaries("prometheus-alertmanager", "amtool")
    site = site_template(tmp_path, "https://grafana.example", "https://docs.example")
    config = render_alertmanager(
        tmp_path, receiver.url, site, group_wait="1s", group_interval="1s", repeat_interval="1h"
    )
    port = free_port()
    proc = start_alertmanager(config, port, tmp_path)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def amtool(url: str, *args: str) -> str:
    proc = subprocess.run(["amtool", f"--alertmanager.url={url}", *args], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def inhibited(url: str) -> set[tuple[str, str]]:
    """(alertname, run) of every alert Alertmanager holds back by an inhibit rule."""
    alerts = json.loads(amtool(url, "alert", "query", "--inhibited", "-o", "json"))
    return {(a["labels"]["alertname"], a["labels"].get("run", "")) for a in alerts}


def test_alertmanager_inhibits_what_non_finite_explains_and_all_runs_while_collector_is_down(
    alertmanager: str,
) -> None:
    for labels in (
        "alertname=non_finite severity=critical run=r1",
        "alertname=loss_spike severity=error run=r1",
        "alertname=grad_explosion severity=error run=r1",
        "alertname=update_ratio_high severity=warning run=r1 parameter=w",
        "alertname=loss_spike severity=error run=r2",  # another run: kept
        "alertname=throughput_drop severity=warning run=r1",  # not explained by NaN
        "alertname=rank_crashed severity=critical run=r3",
        "alertname=rank_stalled severity=error run=r3",  # ranks waiting for the crashed one
        "alertname=trainer_silent severity=error run=r3",  # may be why the others crashed
        "alertname=straggler severity=warning run=r4",
        "alertname=step_time_increase severity=warning run=r4",  # the job waits for it
        "alertname=rank_stalled severity=error run=r4",  # a straggler does not explain a hang
    ):
        amtool(alertmanager, "alert", "add", *labels.split())
    caused = {
        ("loss_spike", "r1"), ("grad_explosion", "r1"), ("update_ratio_high", "r1"),
        ("rank_stalled", "r3"), ("step_time_increase", "r4"),
    }  # fmt: skip
    assert wait_until(lambda: inhibited(alertmanager) == caused, 30)

    amtool(alertmanager, "alert", "add", "alertname=GradwatchCollectorDown", "severity=critical",
           "job=gradwatch-collector")  # fmt: skip
    every_run = caused | {
        ("non_finite", "r1"), ("loss_spike", "r2"), ("throughput_drop", "r1"),
        ("rank_crashed", "r3"), ("straggler", "r4"), ("rank_stalled", "r4"),
        ("trainer_silent", "r3"),
    }  # fmt: skip
    assert wait_until(lambda: inhibited(alertmanager) == every_run, 30)
    active = json.loads(amtool(alertmanager, "alert", "query", "-o", "json"))
    assert [a["labels"]["alertname"] for a in active] == ["GradwatchCollectorDown"]


def test_alertmanager_sends_a_1024_rank_group_within_slack_and_pagerduty_limits(
    alertmanager: str, receiver: Receiver
) -> None:
    sent = payloads(
        collector_alert(i % 8, id=100 + i, parameter=f"h.{i:04d}.w") for i in range(1024)
    )  # 1,024 alerts in one group: one per parameter
    sent += payloads([job_alert(range(1024), run="job-run")])
    r = httpx.post(f"{alertmanager}/api/v2/alerts", json=sent, timeout=30)
    assert r.status_code == 200, r.text

    # Alertmanager may flush a first notification before it has taken in all 1,024; the group
    # is sent again (group_interval 1s) once complete: wait for that one.
    def complete(path: str, key: str) -> list[dict[str, Any]] | None:
        bodies = receiver.bodies(path)
        full = [b for b in bodies if key in json.dumps(b)]
        job = [b for b in bodies if "job-run" in json.dumps(b)]
        return full + job[:1] if full and job else None

    slack = wait_until(lambda: complete("/slack", "(1024 firing)"), 60)
    pagerduty = wait_until(lambda: complete("/pagerduty", '"num_firing": "1024"'), 60)
    assert max(receiver.sizes("/slack")) <= SLACK_MESSAGE_MAX
    assert max(receiver.sizes("/pagerduty")) <= PAGERDUTY_EVENT_MAX
    by_run = {
        "demo": next(b for b in slack if "run demo" in b["attachments"][0]["title"]),
        "job-run": next(b for b in slack if "run job-run" in b["attachments"][0]["title"]),
    }
    for run, shown in (("demo", "ranks 0; 1; 2; 3 +1020 more"),
                       ("job-run", "ranks 0-1023 (origin rank 0)")):  # fmt: skip
        att = by_run[run]["attachments"][0]
        assert len(att["text"]) <= SLACK_TEXT_MAX and shown in att["text"], att["text"]
        assert att["text"].count("loss is nan") == 1
        buttons = {a["text"]: a["url"] for a in att["actions"]}
        assert set(buttons) == {"Runbook", "Dashboard", "Alert", "Silence"}
        assert buttons["Runbook"] == "http://localhost:8000/docs/rules.md#non_finite"
        assert buttons["Dashboard"].startswith(
            f"https://grafana.example/d/gradwatch-run?var-run={run}&var-rank=0&from="
        )
        assert buttons["Silence"].startswith(f"{alertmanager}/#/silences/new?filter=")
        assert att["title_link"] == buttons["Dashboard"]

    for event in pagerduty:
        payload = event["payload"]
        assert len(payload["summary"]) <= PAGERDUTY_SUMMARY_MAX
        assert payload["class"] == "non_finite" and payload["component"] == "rank 0"
        assert payload["group"] in ("demo", "job-run") and payload["severity"] == "critical"
        details = payload["custom_details"]
        assert "error" not in details, details  # Alertmanager's note when it drops details
        assert details["num_firing"] in ("1", "1024")
        assert {link["text"] for link in event["links"]} == {
            "Dashboard", "Runbook", "Alert", "Silence",
        }  # fmt: skip
    demo = next(e for e in pagerduty if e["payload"]["group"] == "demo")
    assert "ranks 0; 1; 2; 3 +1020 more" in demo["payload"]["summary"]
    assert demo["payload"]["custom_details"]["firing"] == "1024"
