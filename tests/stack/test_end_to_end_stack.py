"""The whole alert path with real processes on loopback: trainer → collector → Alertmanager →
Slack and PagerDuty (a local receiver), and Prometheus scraping the collector.

Uses the repository's alertmanager.yml and prometheus.yml, rendered only to point at the test's
ports and files (see stack_support). Needs the Debian binaries (deploy/install-debian-packages.sh);
skips without them unless GRADWATCH_REQUIRE_STACK=1.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.processes import CollectorProcess, run_trainer, stop_process
from tests.helpers.stack import need_binaries, render_alertmanager, render_prometheus
from tests.helpers.waiting import free_port, wait_until

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


class Receiver(ThreadingHTTPServer):
    """Stands in for Slack and PagerDuty: records every POST body by path."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in list(self.posts) if p == path]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posts.append((self.path, json.loads(body or b"{}")))
        self.send_response(202 if self.path == "/pagerduty" else 200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "success"}' if self.path == "/pagerduty" else b"ok")

    def log_message(self, *args: object) -> None:
        pass


def start(cmd: list[str], log: Path, ready_url: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited {proc.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(ready_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 30, interval=0.2)
    return proc


def waited(predicate: Callable[[], Any], timeout: float, receiver: Receiver, logs: Path) -> Any:
    """wait_until, failing with what the receiver got and the logs' tails."""
    try:
        return wait_until(predicate, timeout, interval=0.2)
    except TimeoutError:
        tails = {p.name: p.read_text()[-3000:] for p in sorted(logs.glob("*.log"))}
        pytest.fail(f"timed out; receiver got {receiver.posts}\n{tails}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.shutdown()
    server.server_close()


def test_stack_delivers_critical_alert_to_slack_and_pagerduty_then_resolves(
    tmp_path: Path, receiver: Receiver
) -> None:
    need_binaries()
    am_port, prom_port = free_port(), free_port()
    am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
    am_cfg = render_alertmanager(
        tmp_path, receiver.url, group_wait="1s", group_interval="1s", repeat_interval="1h"
    )
    procs: list[subprocess.Popen[bytes]] = []
    collector = CollectorProcess(tmp_path, "--alertmanager", am_url,
                                 "--alertmanager-resend", "2", "--grace-seconds", "6")  # fmt: skip
    try:
        (tmp_path / "am").mkdir()
        procs.append(start([
            "prometheus-alertmanager", f"--config.file={am_cfg}",
            f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=", "--log.level=debug",
        ], tmp_path / "alertmanager.log", f"{am_url}/-/ready"))  # fmt: skip
        collector.start()
        target = collector.http.removeprefix("http://")
        prom_cfg = render_prometheus(tmp_path, target, f"127.0.0.1:{am_port}", "1s")
        procs.append(start([
            "prometheus", f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ], tmp_path / "prometheus.log", f"{prom_url}/-/ready"))  # fmt: skip

        # Prometheus applies new targets through a throttled discovery loop (~5 s): start training
        # only once it scrapes the collector, so it sees the run before and after the fault.
        def scraping() -> bool:
            up = httpx.get(f"{prom_url}/api/v1/query", params={"query": "up"}).json()
            return bool(up["data"]["result"])

        waited(scraping, 30, receiver, tmp_path)
        # Full (update) statistics every 5 steps, NaN at 360: ratios stay finite for well over a
        # scrape interval first (quantiles of NaN ratios are not exported).
        run_trainer(collector.listen, RUN, 400, ["nan@360"], "--size", "tiny", "--full-every", "5",
                    timeout=90)  # fmt: skip
        alert = collector.wait_for_alert("non_finite", run=RUN)

        # Firing: Slack text and a PagerDuty v2 trigger naming run, rule and parameter.
        def slack(status: str) -> dict[str, Any] | None:
            return next((b for b in receiver.bodies("/slack") if status in json.dumps(b)), None)

        fired = waited(lambda: slack("CRITICAL"), 30, receiver, tmp_path)
        text = json.dumps(fired)
        assert RUN in text and "non_finite" in text and alert["parameter"] in text
        assert f"/alerts/{alert['id']}" in text
        pd = receiver.bodies("/pagerduty")
        trigger = next(b for b in pd if b["event_action"] == "trigger")
        assert trigger["routing_key"] == "test-routing-key"
        summary = trigger["payload"]["summary"]
        assert RUN in summary and "non_finite" in summary and alert["parameter"] in summary
        details = trigger["payload"]["custom_details"]
        assert details["run"] == RUN and alert["parameter"] in details["parameter"]

        # Resolved: the run said bye, the grace period passed, the collector resolved it.
        assert waited(lambda: slack("RESOLVED"), 40, receiver, tmp_path)

        def resolves() -> list[dict[str, Any]]:
            return [b for b in receiver.bodies("/pagerduty") if b["event_action"] == "resolve"]

        resolve = waited(resolves, 20, receiver, tmp_path)[0]
        assert resolve["dedup_key"] == trigger["dedup_key"]

        # Prometheus scraped the series the dashboards read.
        series = httpx.get(
            f"{prom_url}/api/v1/series",
            params={"match[]": f'{{__name__=~"gradwatch_.+", run="{RUN}"}}'},
        ).json()
        names = {s["__name__"] for s in series["data"]}
        assert EXPECTED <= names, sorted(EXPECTED - names)
        up = httpx.get(f"{prom_url}/api/v1/query", params={"query": "up"}).json()["data"]
        assert [r["value"][1] for r in up["result"]] == ["1"]
        counts = httpx.get(collector.http + "/metrics").text
        assert 'gradwatch_alertmanager_notifications_total{result="failure"} 0.0' in counts
        lint = subprocess.run(["promtool", "check", "metrics"], input=counts, text=True,
                              capture_output=True, timeout=30)  # fmt: skip
        assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    finally:
        collector.stop()
        for proc in reversed(procs):
            stop_process(proc)
