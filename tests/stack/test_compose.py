"""The compose file and the Dockerfiles: the compose-spec schema (no Docker engine here), safe
defaults, startup order, the files they mount and the layers they build."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.helpers.stack import (
    COMPOSE,
    DEPLOY,
    PROMETHEUS_DIR,
    ROOT,
    amtool_render,
    collector_alert,
    load,
    payloads,
    template_data,
)

MONITORING = ("prometheus", "alertmanager", "grafana")
VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}`` / ``${VAR:-default}`` substitution (and ``$$`` for a ``$``)."""
    text = VARIABLE.sub(lambda m: env.get(m.group(1)) or m.group(2) or "", text)
    return text.replace("$$", "$")


def compose(**env: str) -> dict[str, Any]:
    """The compose file as ``docker compose config`` would see it with ``env``."""
    return dict(yaml.safe_load(interpolate(COMPOSE.read_text(), env)))


def test_compose_file_matches_the_compose_spec_schema() -> None:
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    jsonschema.Draft201909Validator(schema).validate(load(COMPOSE))
    jsonschema.Draft201909Validator(schema).validate(compose())


def test_compose_publishes_every_port_on_loopback_unless_told_otherwise() -> None:
    cases = [
        ({}, "127.0.0.1", "127.0.0.1"),
        ({"GRADWATCH_BIND": "0.0.0.0"}, "0.0.0.0", "127.0.0.1"),
        ({"GRADWATCH_INGEST_BIND": "10.0.0.5"}, "127.0.0.1", "10.0.0.5"),
    ]
    for env, web, ingest in cases:
        services = compose(**env)["services"]
        for name, svc in services.items():
            for port in svc.get("ports", []):
                host, published, _ = str(port).split(":")
                assert host == (ingest if published == "5555" else web), f"{name}: {port}"


def test_compose_exposes_no_prometheus_lifecycle_or_admin_api() -> None:
    command = " ".join(compose()["services"]["prometheus"]["command"])
    assert "--web.enable-lifecycle" not in command and "--web.enable-admin-api" not in command


def test_compose_monitoring_starts_whatever_the_collector_does() -> None:
    """Prometheus, Alertmanager and Grafana wait on no service, so GradwatchCollectorDown can
    fire when the collector exits at startup (a bad rules file)."""
    services = compose()["services"]
    for name in MONITORING:
        assert "depends_on" not in services[name], name
    assert services["trainer"]["depends_on"] == {"collector": {"condition": "service_healthy"}}


def test_compose_services_are_pinned_healthy_and_mount_existing_files() -> None:
    spec = compose()
    services = spec["services"]
    assert {"collector", "trainer", *MONITORING, "dcgm-exporter"} <= set(services)
    assert services["trainer"]["profiles"] == ["demo"]
    assert services["dcgm-exporter"]["profiles"] == ["gpu"]
    versions = (ROOT / "docs/stack.md").read_text().split("## Versions", 1)[1]
    for name, svc in services.items():
        image = svc["image"]
        assert re.search(r":[\w][\w.-]*$", image) and not image.endswith(":latest"), name
        if "build" not in svc:
            assert f"`{image}`" in versions, f"docs/stack.md, Versions: {image}"
        if name != "trainer":  # a one-shot job
            assert svc["healthcheck"]["test"][0] == "CMD", name
        if "build" in svc:
            assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in spec["volumes"], f"{name}: {source} is not a named volume"
    assert re.search(r"checked \d{4}-\d\d-\d\d", versions)


def test_compose_mounts_the_tested_configs_at_the_paths_they_reference() -> None:
    services = compose()["services"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "./alertmanager:/etc/alertmanager:ro" in services["alertmanager"]["volumes"]
    grafana = " ".join(services["grafana"]["volumes"])
    assert "../grafana/provisioning:/etc/grafana/provisioning" in grafana
    provider = load(ROOT / "grafana/provisioning/dashboards/gradwatch.yml")["providers"][0]
    assert f"../grafana/dashboards:{provider['options']['path']}" in grafana
    prom = load(PROMETHEUS_DIR / "prometheus.yml")
    targets = [t for j in prom["scrape_configs"] for s in j["static_configs"] for t in s["targets"]]
    assert "collector:8000" in targets and "alertmanager:9093" in targets
    am = load(DEPLOY / "alertmanager/alertmanager.yml")
    site = services["alertmanager"]["configs"][0]["target"]
    assert any(Path(site).match(glob) for glob in am["templates"] if glob.startswith("/"))


def test_compose_site_urls_reach_the_alert_links(tmp_path: Path) -> None:
    """The inline config compose writes for Alertmanager is a template file that sets the
    Dashboard and Runbook link bases from GRADWATCH_GRAFANA_URL and GRADWATCH_DOCS_URL."""
    env = {"GRADWATCH_GRAFANA_URL": "https://grafana.corp", "GRADWATCH_DOCS_URL": "https://d.corp"}
    site = tmp_path / "site.tmpl"
    site.write_text(compose(**env)["configs"]["alertmanager-site"]["content"])
    data = tmp_path / "data.json"
    down = payloads([collector_alert(0)])
    down[0]["annotations"].pop("runbook_url")
    data.write_text(json.dumps(template_data(down, "slack")))
    text = '{{ template "gradwatch.dashboard_url" . }} {{ template "gradwatch.runbook_url" . }}'
    dashboard, runbook = amtool_render(text, data, site).split()
    assert dashboard.startswith("https://grafana.corp/d/gradwatch-run?var-run=demo&var-rank=0")
    assert runbook == "https://d.corp/stack.md#non_finite"


def test_compose_variables_are_all_listed_in_env_example() -> None:
    used = set(VARIABLE.findall(COMPOSE.read_text()))
    names = {name for name, _ in used} | {
        s["environment"] for s in load(COMPOSE)["secrets"].values()
    }
    example = (DEPLOY / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?(GRADWATCH_\w+)=", example, re.M))
    assert names == listed
    for name, default in used:  # the example shows the defaults compose uses
        if default:
            assert f"# {name}={default}\n" in example, name


# ----------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize(("dockerfile", "extra"), [("collector", "collector"),
                                                   ("trainer", "agent")])  # fmt: skip
def test_dockerfile_installs_dependencies_before_copying_the_source(
    dockerfile: str, extra: str
) -> None:
    lines = [
        line.split(None, 1)
        for line in (DEPLOY / f"{dockerfile}.Dockerfile").read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    ]
    steps = [(op, arg) for op, arg in lines if op in ("COPY", "RUN")]
    deps = steps.index(("RUN", f"python pip-deps.py {extra}"))
    copied_first = [arg for op, arg in steps[:deps] if op == "COPY"]
    assert copied_first == ["pyproject.toml deploy/pip-deps.py ./"]
    sources = [i for i, (op, arg) in enumerate(steps) if op == "COPY" and "collector" in arg]
    first_source = min(sources)
    assert deps < first_source
    assert any(op == "RUN" and "pip install --no-deps ." in arg for op, arg in steps[deps:])
    ignore = (DEPLOY / f"{dockerfile}.Dockerfile.dockerignore").read_text().split()
    assert "!deploy/pip-deps.py" in ignore and "!pyproject.toml" in ignore


def test_pip_deps_lists_the_dependencies_of_an_extra_from_pyproject() -> None:
    out = subprocess.run([sys.executable, str(DEPLOY / "pip-deps.py"), "--list", "collector"],
                         capture_output=True, text=True, timeout=30, cwd=ROOT,
                         env={**os.environ})  # fmt: skip
    assert out.returncode == 0, out.stderr
    reqs = out.stdout.split("\n")
    assert "fastapi>=0.135" in reqs and "msgpack>=1.0" in reqs
    assert not any(r.startswith("torch") for r in reqs)
    bad = subprocess.run([sys.executable, str(DEPLOY / "pip-deps.py"), "--list", "nope"],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)  # fmt: skip
    assert bad.returncode != 0 and "unknown extra" in bad.stderr
