"""The deploy/ and grafana/ files for tests: paths, renderers that point them at test processes,
real Prometheus/Alertmanager processes, a stand-in for Slack and PagerDuty, and alert groups as
the collector sends them.

Rendered copies change only addresses, file paths and the site URLs; everything else is the file
compose mounts.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gradwatch.collector.alert import Alert
from gradwatch.collector.alertmanager import AlertmanagerPusher
from tests.helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTMANAGER_DIR = DEPLOY / "alertmanager"
TEMPLATES = ALERTMANAGER_DIR / "templates" / "*.tmpl"
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


def site_template(out: Path, grafana_url: str, docs_url: str) -> Path:
    """A site file as compose writes it: the Grafana and docs base URLs of the links."""
    path = out / "site.tmpl"
    path.write_text(
        f'{{{{ define "gradwatch.grafana_url" }}}}{grafana_url}{{{{ end }}}}\n'
        f'{{{{ define "gradwatch.docs_url" }}}}{docs_url}{{{{ end }}}}\n'
    )
    return path


def render_alertmanager(
    out: Path, receiver_url: str, site: Path | None = None, **route_timing: str
) -> Path:
    """Copy of alertmanager.yml whose Slack and PagerDuty traffic goes to ``receiver_url``.

    Slack's webhook URL and PagerDuty's routing key are written to files in ``out`` (as compose
    secrets would hold them); ``site`` replaces compose's site file; ``route_timing`` overrides
    group_wait and friends.
    """
    cfg = load(ALERTMANAGER_DIR / "alertmanager.yml")
    (out / "slack-webhook-url").write_text(f"{receiver_url}/slack\n")
    (out / "pagerduty-routing-key").write_text("test-routing-key\n")
    cfg["global"]["slack_api_url_file"] = str(out / "slack-webhook-url")
    cfg["global"]["pagerduty_url"] = f"{receiver_url}/pagerduty"
    for receiver in cfg["receivers"]:
        for pd in receiver.get("pagerduty_configs", []):
            pd["routing_key_file"] = str(out / "pagerduty-routing-key")
    local = [t for t in cfg["templates"] if not t.startswith("/")]
    cfg["templates"] = [str(ALERTMANAGER_DIR / t) for t in local] + ([str(site)] if site else [])
    cfg["route"].update(route_timing)
    path = out / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def render_prometheus(
    out: Path, collector: str, alertmanager: str, interval: str, dcgm: str | None = None
) -> Path:
    """Copy of prometheus.yml scraping ``collector`` (host:port) every ``interval``, and the dcgm
    job (its relabelling included) at ``dcgm`` when given."""
    cfg = load(PROMETHEUS_DIR / "prometheus.yml")
    cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = interval
    cfg["rule_files"] = [str(PROMETHEUS_DIR / f) for f in cfg["rule_files"]]
    cfg["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    jobs["gradwatch-collector"]["static_configs"] = [{"targets": [collector]}]
    jobs["dcgm"]["static_configs"] = [{"targets": [dcgm]}]
    cfg["scrape_configs"] = [jobs["gradwatch-collector"]] + ([jobs["dcgm"]] if dcgm else [])
    path = out / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_server(cmd: list[str], log: Path, ready_url: str) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with output to ``log``; return once ``ready_url`` answers 200."""
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


def start_alertmanager(config: Path, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """``prometheus-alertmanager`` on loopback ``port`` with its state in ``workdir``."""
    (workdir / "am").mkdir(exist_ok=True)
    return start_server([
        "prometheus-alertmanager", f"--config.file={config}",
        f"--storage.path={workdir / 'am'}", f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url=http://127.0.0.1:{port}", "--cluster.listen-address=",
        "--log.level=debug",
    ], workdir / "alertmanager.log", f"http://127.0.0.1:{port}/-/ready")  # fmt: skip


class Receiver(ThreadingHTTPServer):
    """Stands in for Slack and PagerDuty: records every POST body (parsed, and its size) by path."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any], int]] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body, _ in list(self.posts) if p == path]

    def sizes(self, path: str) -> list[int]:
        return [size for p, _, size in list(self.posts) if p == path]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posts.append((self.path, json.loads(body or b"{}"), len(body)))
        self.send_response(202 if self.path == "/pagerduty" else 200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "success"}' if self.path == "/pagerduty" else b"ok")

    def log_message(self, *args: object) -> None:
        pass


# ----------------------------------------------------------------------------- alert groups


@dataclass(frozen=True)
class _PusherConfig:
    alertmanager_url: str | None = "http://127.0.0.1:9"
    alertmanager_resend_seconds: float = 30.0
    public_url: str = "http://localhost:8000"
    grafana_url: str = ""


class _NoBook:
    def subscribe(self, callback: Any) -> None:
        raise AssertionError("payloads only")

    def alerts(self, state: str | None = None) -> list[Alert]:
        return []


NAN_MESSAGE = (
    "loss is nan; 3 parameter(s) with non-finite gradient or weight: h.0.attn.c_attn.weight, "
    "h.0.attn.c_proj.weight, h.0.mlp.c_fc.weight; NaN/Inf gradient elements: "
    "h.0.attn.c_attn.weight 1536/1179648, h.0.attn.c_proj.weight 48/589824"
)


def collector_alert(rank: int, **kw: Any) -> Alert:
    """A firing ``non_finite`` alert of run ``demo`` on ``rank`` (fields overridable)."""
    base = Alert(100 + rank, "non_finite", "critical", "firing", "demo", rank,
                 "h.0.attn.c_attn.weight", 360, float("nan"), 0.0, NAN_MESSAGE,
                 "stop the run and restore the last good checkpoint", 1_796_000_000.0,
                 1_796_000_000.0, first_step=358)  # fmt: skip
    return replace(base, **kw)


def job_alert(ranks: range, **kw: Any) -> Alert:
    """One ``non_finite`` alert covering ``ranks`` (its origin: the first)."""
    return collector_alert(ranks[0], ranks=list(ranks), **kw)


def payloads(
    alerts: Iterable[Alert], public_url: str = "http://localhost:8000", grafana_url: str = ""
) -> list[Any]:
    """What the collector POSTs to Alertmanager for ``alerts``."""
    config = _PusherConfig(public_url=public_url, grafana_url=grafana_url)
    pusher = AlertmanagerPusher(config, _NoBook())
    return [pusher.payload(a) for a in alerts]


def _before(a: dict[str, str], b: dict[str, str]) -> bool:
    """Alertmanager's order of alerts in a notification (types.AlertSlice.Less)."""
    for key in ("job", "instance"):
        if key in a and key in b and a[key] != b[key]:
            return a[key] < b[key]
    if len(a) != len(b):
        return len(a) < len(b)
    for name in sorted({*a, *b}):
        if name not in a or name not in b:
            return name not in a
        if a[name] != b[name]:
            return a[name] < b[name]
    return False


def template_data(
    sent: Sequence[dict[str, Any]], receiver: str, external_url: str = "http://localhost:9093"
) -> dict[str, Any]:
    """Alertmanager's template.Data for one group of ``sent`` alerts, as it would notify them."""
    order = sorted(
        sent, key=functools.cmp_to_key(lambda x, y: -1 if _before(x["labels"], y["labels"]) else 1)
    )
    alerts = [
        {"status": "resolved" if a.get("resolved") else "firing", "labels": a["labels"],
         "annotations": a["annotations"], "startsAt": a["startsAt"],
         "endsAt": a["endsAt"] if a.get("resolved") else "0001-01-01T00:00:00Z",
         "generatorURL": a["generatorURL"], "fingerprint": f"{i:016x}"}
        for i, a in enumerate(order)
    ]  # fmt: skip

    def common(key: str) -> dict[str, str]:
        first = alerts[0][key]
        return {k: v for k, v in first.items() if all(x[key].get(k) == v for x in alerts)}

    labels = common("labels")
    return {
        "receiver": receiver,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "alerts": alerts,
        "groupLabels": {k: labels[k] for k in ("alertname", "run") if k in labels},
        "commonLabels": labels,
        "commonAnnotations": common("annotations"),
        "externalURL": external_url,
    }


def amtool_render(text: str, data: Path, *globs: Path) -> str:
    """``amtool template render`` of ``text`` over ``data`` with the repository's templates."""
    need_binaries("amtool")
    cmd = ["amtool", "template", "render", f"--template.text={text}", f"--template.data={data}"]
    cmd += [f"--template.glob={g}" for g in (TEMPLATES, *globs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{text}: {proc.stderr}"
    return proc.stdout
