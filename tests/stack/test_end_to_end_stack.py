"""The whole alert path with real processes on loopback: trainer → collector → Alertmanager →
Slack and PagerDuty (a local receiver), Prometheus scraping the collector and a dcgm-exporter
stand-in, and every dashboard query run against that Prometheus.

Uses the repository's alertmanager.yml and prometheus.yml, rendered only to point at the test's
ports and files (tests/helpers/stack.py). Needs the Debian binaries
(deploy/install-debian-packages.sh); skips without them unless GRADWATCH_REQUIRE_STACK=1.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.processes import CollectorProcess, run_trainer, stop_process
from tests.helpers.stack import (
    Receiver,
    need_binaries,
    render_alertmanager,
    render_prometheus,
    start_alertmanager,
    start_server,
)
from tests.helpers.waiting import free_port, wait_until
from tests.stack.test_dashboards import DASHBOARDS, dashboard, panels

pytestmark = [pytest.mark.stack, pytest.mark.timeout(150)]
RUN = "stack-e2e"
# Series the dashboards read that a CPU demo run produces (CUDA, scaler series are absent).
EXPECTED = {
    "gradwatch_loss", "gradwatch_grad_norm", "gradwatch_learning_rate", "gradwatch_step",
    "gradwatch_step_time_seconds", "gradwatch_tokens_per_second", "gradwatch_memory_bytes",
    "gradwatch_parameters", "gradwatch_update_ratio", "gradwatch_param_grad_norm",
    "gradwatch_param_update_ratio", "gradwatch_alerts_firing", "gradwatch_run_info",
    "gradwatch_last_frame_timestamp_seconds", "gradwatch_rank_ended", "gradwatch_grad_abs",
}  # fmt: skip
HOST = socket.gethostname()[:256]
"""The trainer's host as its hello reports it: the dcgm stand-in's Hostname, for the host join."""
DCGM = "".join(
    f'{metric}{{gpu="0",UUID="GPU-5fd4a8e2-0000-4000-8000-00000000e2e0",pci_bus_id="00000000:07:00.0",'
    f'device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="{HOST}",'
    f'DCGM_FI_DRIVER_VERSION="550.54.15"}} {value}\n'
    for metric, value in (("DCGM_FI_DEV_GPU_UTIL", 87), ("DCGM_FI_DEV_FB_USED", 40000),
                          ("DCGM_FI_DEV_POWER_USAGE", 612.5), ("DCGM_FI_DEV_GPU_TEMP", 64),
                          ("DCGM_FI_DEV_XID_ERRORS", 0), ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 0.41))
)  # fmt: skip
"""What dcgm-exporter serves for one GPU (its default counters the dashboards read)."""


class Exposition(ThreadingHTTPServer):
    """Serves a fixed Prometheus text exposition at /metrics (the dcgm-exporter stand-in)."""

    def __init__(self, text: str) -> None:
        self.text = text.encode()
        super().__init__(("127.0.0.1", 0), _Serve)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Serve(BaseHTTPRequestHandler):
    server: Exposition

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.server.text)

    def log_message(self, *args: object) -> None:
        pass


def waited(predicate: Callable[[], Any], timeout: float, receiver: Receiver, logs: Path) -> Any:
    """wait_until, failing with what the receiver got and the logs' tails."""
    try:
        return wait_until(predicate, timeout, interval=0.2)
    except TimeoutError:
        tails = {p.name: p.read_text()[-3000:] for p in sorted(logs.glob("*.log"))}
        pytest.fail(f"timed out; receiver got {receiver.posts}\n{tails}")


@pytest.fixture
def dcgm() -> Iterator[Exposition]:
    server = Exposition(DCGM)
    yield server
    server.shutdown()
    server.server_close()


SELECTOR = re.compile(r"\b(?:gradwatch_\w+|DCGM_\w+|ALERTS)(?:\{[^}]*\})?")


def check_dashboard_queries(prom_url: str, start: float) -> None:
    """Every dashboard query runs without error over the test's time range, and returns data
    when every series selector in it does (GPU panels joined by UUID stay empty: a CPU run's
    ranks have no gpu_uuid)."""

    def query(promql: str) -> list[Any]:
        r = httpx.get(f"{prom_url}/api/v1/query_range", params={
            "query": promql, "start": start, "end": time.time(), "step": "1s"})  # fmt: skip
        assert r.status_code == 200, f"{promql}: {r.text}"
        return list(r.json()["data"]["result"])

    checked = 0
    for name in DASHBOARDS:
        board = dashboard(name)
        queries = [(p["title"], t["expr"]) for p in panels(board) for t in p["targets"]]
        queries += [(n["name"], n["expr"]) for n in board["annotations"]["list"] if "expr" in n]
        for title, expr in queries:
            promql = (expr.replace("$__rate_interval", "1m").replace("$run", RUN)
                      .replace("$rank", ".*"))  # fmt: skip
            result = query(promql)
            inputs = all(query(selector) for selector in SELECTOR.findall(promql))
            if inputs and 'gpu_uuid!=""' not in promql:
                assert result, f"{name} / {title}: no data for {promql}"
                checked += 1
    assert checked >= 30, checked  # 33 when written


def test_stack_delivers_critical_alert_to_slack_and_pagerduty_then_resolves(
    tmp_path: Path, receiver: Receiver, dcgm: Exposition
) -> None:
    need_binaries()
    start = time.time()
    am_port, prom_port = free_port(), free_port()
    am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
    am_cfg = render_alertmanager(
        tmp_path, receiver.url, group_wait="1s", group_interval="1s", repeat_interval="1h"
    )
    procs: list[subprocess.Popen[bytes]] = []
    collector = CollectorProcess(tmp_path, "--alertmanager", am_url,
                                 "--alertmanager-resend", "2", "--grace-seconds", "6")  # fmt: skip
    try:
        procs.append(start_alertmanager(am_cfg, am_port, tmp_path))
        collector.start()
        target = collector.http.removeprefix("http://")
        prom_cfg = render_prometheus(tmp_path, target, f"127.0.0.1:{am_port}", "1s", dcgm.target)
        procs.append(start_server([
            "prometheus", f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ], tmp_path / "prometheus.log", f"{prom_url}/-/ready"))  # fmt: skip

        # Prometheus applies new targets through a throttled discovery loop (~5 s): start training
        # only once it scrapes the collector, so it sees the run before and after the fault.
        def scraping() -> bool:
            up = httpx.get(f"{prom_url}/api/v1/query", params={"query": "up == 1"}).json()
            return len(up["data"]["result"]) == 2

        waited(scraping, 30, receiver, tmp_path)
        # Full (update) statistics every 5 steps, NaN at 360: ratios stay finite for well over a
        # scrape interval first (quantiles of NaN ratios are not exported).
        run_trainer(collector.listen, RUN, 400, ["nan@360"], "--size", "tiny", "--full-every", "5",
                    timeout=90)  # fmt: skip
        alert = collector.wait_for_alert("non_finite", run=RUN)

        # Firing: Slack text and buttons, and a PagerDuty v2 trigger naming run, rule, parameter.
        def slack(status: str) -> dict[str, Any] | None:
            return next((b for b in receiver.bodies("/slack") if status in json.dumps(b)), None)

        fired = waited(lambda: slack("CRITICAL"), 30, receiver, tmp_path)
        attachment = fired["attachments"][0]
        assert RUN in attachment["title"] and "non_finite" in attachment["title"]
        assert alert["parameter"] in attachment["text"]
        buttons = {a["text"]: a["url"] for a in attachment["actions"]}
        assert buttons["Alert"] == f"{collector.http}/alerts/{alert['id']}"
        assert buttons["Runbook"] == f"{collector.http}/docs/rules.md#non_finite"
        assert buttons["Dashboard"].startswith(
            f"http://localhost:3000/d/gradwatch-run?var-run={RUN}&var-rank=0&from="
        )
        pd = receiver.bodies("/pagerduty")
        trigger = next(b for b in pd if b["event_action"] == "trigger")
        assert trigger["routing_key"] == "test-routing-key"
        payload = trigger["payload"]
        assert RUN in payload["summary"] and "non_finite" in payload["summary"]
        assert payload["group"] == RUN and payload["class"] == "non_finite"
        assert payload["custom_details"]["run"] == RUN
        assert alert["parameter"] in payload["custom_details"]["parameters"]

        # Resolved: the run said bye, the grace period passed, the collector resolved it.
        assert waited(lambda: slack("RESOLVED"), 40, receiver, tmp_path)

        def resolves() -> list[dict[str, Any]]:
            return [b for b in receiver.bodies("/pagerduty") if b["event_action"] == "resolve"]

        resolve = waited(resolves, 20, receiver, tmp_path)[0]
        assert resolve["dedup_key"] == trigger["dedup_key"]

        # Prometheus scraped the series the dashboards read, dcgm's relabelled for the joins.
        series = httpx.get(
            f"{prom_url}/api/v1/series",
            params={"match[]": f'{{__name__=~"gradwatch_.+", run="{RUN}"}}'},
        ).json()
        names = {s["__name__"] for s in series["data"]}
        assert EXPECTED <= names, sorted(EXPECTED - names)
        gpu = httpx.get(f"{prom_url}/api/v1/series",
                        params={"match[]": "DCGM_FI_DEV_GPU_UTIL"}).json()["data"]  # fmt: skip
        assert [(s["gpu_uuid"], s["host"]) for s in gpu] == [
            ("GPU-5fd4a8e2-0000-4000-8000-00000000e2e0", HOST)
        ]
        assert "UUID" not in gpu[0] and "Hostname" not in gpu[0]
        check_dashboard_queries(prom_url, start)
        counts = httpx.get(collector.http + "/metrics").text
        assert 'gradwatch_alertmanager_notifications_total{result="failure"} 0.0' in counts
        lint = subprocess.run(["promtool", "check", "metrics"], input=counts, text=True,
                              capture_output=True, timeout=30)  # fmt: skip
        assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    finally:
        collector.stop()
        for proc in reversed(procs):
            stop_process(proc)
