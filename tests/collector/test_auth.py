"""Authentication: CurveZMQ keys for agents (pyzmq's authenticator, real sockets, a real
trainer) and a bearer token for the HTTP API."""

from __future__ import annotations

import math
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from gradwatch.collector.api import create_app
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import build_core
from gradwatch.keys import client_keys, make_keys, read_token, server_keys
from tests.helpers.fake_rank import FakeRank
from tests.helpers.processes import PYTHON, CollectorProcess, run_trainer
from tests.helpers.push import push
from tests.helpers.waiting import wait_until


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    out = tmp_path / "keys"
    done = subprocess.run(
        [PYTHON, "-m", "gradwatch.collector", "keys", "--out", str(out),
         "--client", "trainer", "--client", "intruder"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (out / "collector" / "clients" / "intruder.key").unlink()  # a pair the collector refuses
    return out


def test_keys_write_the_layout_with_private_secrets_and_keep_what_exists(keys: Path) -> None:
    server = keys / "collector" / "server.key_secret"
    for secret in (server, keys / "trainer" / "client.key_secret", keys / "api.token"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    public, _, clients = server_keys(keys / "collector")
    assert [p.name for p in clients.glob("*.key")] == ["trainer.key"]
    assert client_keys(keys / "trainer")[2] == public  # the agent holds the server's key
    assert len(read_token(keys / "api.token")) >= 32
    before = server.read_bytes()
    assert any("newteam" in line for line in make_keys(keys, ["newteam"]))
    assert server.read_bytes() == before and (clients / "newteam.key").exists()


def _metric(proc: CollectorProcess, name: str, **labels: str) -> float:
    text = httpx.get(proc.http + "/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}{{{want}}} (\S+)$" if want else rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else math.nan


@pytest.fixture
def curve_collector(tmp_path: Path, keys: Path) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(tmp_path, "--curve-keys", str(keys / "collector"))
    proc.listen = "tcp://0.0.0.0:0"  # beyond loopback: with CURVE, no warning
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_curve_refuses_forged_and_hijacking_peers_and_counts_them(
    curve_collector: CollectorProcess, keys: Path
) -> None:
    proc = curve_collector
    real = FakeRank("victim")
    push(proc.listen, [real.hello(), real.stats(1)], client_keys(keys / "trainer"))
    wait_until(lambda: proc.get("/runs")["runs"])
    forger = FakeRank("victim")  # a new hello (hijack) and a NaN, without a key / a listed key
    for curve in (None, client_keys(keys / "intruder")):
        push(proc.listen, [forger.hello(), forger.stats(10**6, loss=math.nan)], curve)
    wait_until(lambda: _metric(proc, "gradwatch_peers_refused_total", reason="auth") >= 1)
    wait_until(lambda: _metric(proc, "gradwatch_peers_refused_total", reason="handshake") >= 1)
    assert _metric(proc, "gradwatch_messages_total") == 2  # nothing of theirs was even read
    push(proc.listen, [real.stats(2, loss=math.nan)], client_keys(keys / "trainer"))
    [alert] = [proc.wait_for_alert("non_finite")]
    assert alert["step"] == 2 and proc.alerts() == [alert]
    [rank] = proc.get("/runs")["runs"][0]["ranks"]
    assert rank["host"] == "testhost" and rank["last_step"] == 2
    assert "without CURVE" not in proc.log()


def test_curve_a_real_trainer_connects_with_GRADWATCH_CURVE_KEYS(  # noqa: N802
    curve_collector: CollectorProcess, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADWATCH_CURVE_KEYS", str(keys / "trainer"))
    run_trainer(curve_collector.listen, "keyed", 40, ["nan@30"], "--size", "tiny")
    alert = curve_collector.wait_for_alert("non_finite", run="keyed")
    assert 30 <= alert["first_step"] <= 32


def test_curve_bad_key_folders_are_one_line_errors(tmp_path: Path, keys: Path) -> None:
    from gradwatch.agent.config import AgentConfig

    with pytest.raises(ValueError, match="curve_keys: .*client.key_secret"):
        AgentConfig(run="r", curve_keys=str(tmp_path))
    for argv, says in [
        (["--curve-keys", str(tmp_path)], "--curve-keys: "),
        (["--curve-keys", str(keys / "trainer")], "server.key_secret does not exist"),
        (["--api-token-file", str(tmp_path / "none")], "--api-token-file: cannot read"),
        (["--api-token-reads"], "--api-token-reads: needs --api-token-file"),
    ]:
        out = subprocess.run(
            [PYTHON, "-m", "gradwatch.collector", "--db", ":memory:", *argv],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert says in out.stderr


# ----------------------------------------------------------------------------- HTTP token


def _client(tmp_path: Path, reads: bool) -> tuple[TestClient, str]:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-of-enough-length\n")
    config = CollectorConfig(api_token_file=str(token_file), api_token_reads=reads)
    core = build_core(config, persist=False)
    r = FakeRank("tokened")
    for frame in (r.hello(), r.stats(1, loss=math.nan)):
        core.engine.on_frame(core.fleet.apply(frame), frame)
    return TestClient(create_app(core)), "s3cret-token-of-enough-length"


def test_api_token_guards_acks_and_shows_sessions_only_to_its_holder(tmp_path: Path) -> None:
    client, token = _client(tmp_path, reads=False)
    with client:
        alert_id = client.get("/alerts").json()["alerts"][0]["id"]
        anonymous = client.post(f"/alerts/{alert_id}/ack")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"]
        wrong = {"Authorization": "Bearer not-the-token"}
        assert client.post(f"/alerts/{alert_id}/ack", headers=wrong).status_code == 401
        assert client.get(f"/alerts/{alert_id}").json()["acked"] is False
        good = {"Authorization": f"Bearer {token}"}
        assert client.post(f"/alerts/{alert_id}/ack", headers=good).json()["acked"] is True
        [rank] = client.get("/runs").json()["runs"][0]["ranks"]
        assert rank["session"] == ""
        [rank] = client.get("/runs", headers=good).json()["runs"][0]["ranks"]
        assert len(rank["session"]) == 16
        ops = client.get("/openapi.json").json()["paths"]
        assert ops["/alerts/{alert_id}/ack"]["post"]["security"] == [{"bearer": []}]
        assert "security" not in ops["/alerts"]["get"]


def test_api_token_reads_guards_every_read_but_probes_and_metrics(tmp_path: Path) -> None:
    client, token = _client(tmp_path, reads=True)
    with client:
        for path in ("/alerts", "/runs", "/runs/tokened", "/alerts/1", "/alerts/stream"):
            assert client.get(path).status_code == 401, path
        for path in ("/metrics", "/healthz", "/readyz", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        good = {"Authorization": f"Bearer {token}"}
        assert client.get("/alerts", headers=good).json()["total"] == 1
        ops = client.get("/openapi.json").json()["paths"]
        assert ops["/alerts"]["get"]["security"] == [{"bearer": []}]
        assert "security" not in ops["/metrics"]["get"]
