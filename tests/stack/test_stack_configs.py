"""Prometheus, Alertmanager and compose files: checked by their own tools and by schema."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest

from tests.helpers.stack import (
    ALERTMANAGER_DIR,
    COMPOSE,
    DEPLOY,
    PROMETHEUS_DIR,
    ROOT,
    load,
    need_binaries,
    render_alertmanager,
)

AM_CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"


def tool(*cmd: str) -> str:
    need_binaries(cmd[0])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_prometheus_config_and_rules_pass_promtool_check() -> None:
    tool("promtool", "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    for rules in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        tool("promtool", "check", "rules", str(rules))


def test_prometheus_rules_pass_their_unit_tests() -> None:
    tests = sorted(str(p) for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests
    assert "SUCCESS" in tool("promtool", "test", "rules", *tests)


def test_prometheus_rules_each_have_a_unit_test_and_a_severity() -> None:
    tested = "".join(p.read_text() for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    for path in (PROMETHEUS_DIR / "rules").glob("*.yml"):
        for group in load(path)["groups"]:
            for rule in group["rules"]:
                assert rule["labels"]["severity"] in ("info", "warning", "error", "critical")
                assert {"summary", "description", "action"} <= set(rule["annotations"])
                assert f"alertname: {rule['alert']}" in tested, rule["alert"]


def test_alertmanager_config_passes_amtool_check(tmp_path: Path) -> None:
    tool("amtool", "check-config", str(AM_CONFIG))
    tool("amtool", "check-config", str(render_alertmanager(tmp_path, "http://127.0.0.1:9")))


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=non_finite", "run=r1"], "pagerduty-and-slack"),
        (["severity=critical", "alertname=GradwatchCollectorDown"], "pagerduty-and-slack"),
        (["severity=error", "alertname=grad_explosion", "run=r1"], "slack"),
        (["severity=warning", "alertname=loss_plateau", "run=r1"], "slack"),
        (["severity=info", "alertname=note", "run=r1"], "blackhole"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    out = tool("amtool", "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
    assert out.splitlines()[0].strip() == receiver


def test_alertmanager_templates_render() -> None:
    glob = str(ALERTMANAGER_DIR / "templates" / "*.tmpl")
    for name in ("slack.title", "slack.text", "slack.color", "pagerduty.summary", "link"):
        text = f'{{{{ template "gradwatch.{name}" . }}}}'
        tool("amtool", "template", "render", f"--template.glob={glob}", f"--template.text={text}")


def test_alertmanager_secrets_are_files_that_are_never_committed() -> None:
    cfg = AM_CONFIG.read_text()
    assert "hooks.slack.com" not in cfg and "routing_key:" not in cfg
    ignored = (ALERTMANAGER_DIR / "secrets" / ".gitignore").read_text().split()
    assert {"slack-webhook-url", "pagerduty-routing-key"} <= set(ignored)


def test_install_script_is_idempotent_when_binaries_exist() -> None:
    need_binaries()
    out = subprocess.run(["sh", str(DEPLOY / "install-debian-packages.sh")], capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    assert out.returncode == 0 and "all present" in out.stdout


# ----------------------------------------------------------------------------- compose


def test_compose_file_matches_the_compose_spec_schema() -> None:
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    jsonschema.Draft201909Validator(schema).validate(load(COMPOSE))


def test_compose_services_are_pinned_healthy_and_mount_existing_files() -> None:
    compose = load(COMPOSE)
    services = compose["services"]
    assert {
        "collector",
        "trainer",
        "prometheus",
        "alertmanager",
        "grafana",
        "dcgm-exporter",
    } <= set(services)
    assert services["trainer"]["profiles"] == ["demo"]
    assert services["dcgm-exporter"]["profiles"] == ["gpu"]
    for name, svc in services.items():
        image = svc["image"]
        assert re.search(r":[\w][\w.-]*$", image) and not image.endswith(":latest"), name
        if name != "trainer":  # a one-shot job
            assert svc["healthcheck"]["test"][0] == "CMD", name
        for dep, cond in svc.get("depends_on", {}).items():
            assert cond == {"condition": "service_healthy"} and dep in services, name
        if "build" in svc:
            assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source} is not a named volume"


def test_compose_mounts_the_tested_configs_at_the_paths_they_reference() -> None:
    services = load(COMPOSE)["services"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "./alertmanager:/etc/alertmanager:ro" in services["alertmanager"]["volumes"]
    am = load(AM_CONFIG)
    for path in (am["global"]["slack_api_url_file"],):
        assert path.startswith("/etc/alertmanager/secrets/")
    grafana = " ".join(services["grafana"]["volumes"])
    assert "../grafana/provisioning:/etc/grafana/provisioning" in grafana
    provider = load(ROOT / "grafana/provisioning/dashboards/gradwatch.yml")["providers"][0]
    assert f"../grafana/dashboards:{provider['options']['path']}" in grafana
    prom = load(PROMETHEUS_DIR / "prometheus.yml")
    targets = [t for j in prom["scrape_configs"] for s in j["static_configs"] for t in s["targets"]]
    assert "collector:8000" in targets and "alertmanager:9093" in targets
