"""The ``gradwatch`` command against a live collector: tables (coloured on a terminal, plain when
piped), the API's JSON, filters, acks, runs, rules, the collector subcommand, and errors as one
line with the exit status."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import subprocess
from pathlib import Path

import httpx

from gradwatch.collector.rules import CATALOGUE
from tests.helpers.live import gradwatch, raise_nan
from tests.helpers.processes import PYTHON, CollectorProcess, stop_process
from tests.helpers.waiting import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
ESC = "\033["


def on_terminal(*args: str, env: dict[str, str]) -> str:
    """``gradwatch ARGS`` with its stdout on a pseudo-terminal; what it printed there."""
    master, slave = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    environ.update({"COLUMNS": "200", "TERM": "xterm", **env})
    proc = subprocess.Popen(
        [PYTHON, "-m", "gradwatch.cli", *args], stdout=slave, stderr=subprocess.PIPE, env=environ
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return out.decode()


def test_cli_alerts_table_json_filters_and_ack(collector_process: CollectorProcess) -> None:
    url = collector_process.http
    first, second = raise_nan(collector_process, "a"), raise_nan(collector_process, "b")

    out = gradwatch("alerts", url=url)
    assert out.returncode == 0 and ESC not in out.stdout  # piped: plain
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["ID", "STATE", "SEVERITY", "RULE", "RUN", "RANK", "STEP",
                              "PARAMETER", "AGE", "MESSAGE"]  # fmt: skip
    assert [r.split()[:5] for r in rows] == [
        [str(second["id"]), "firing", "critical", "non_finite", "b"],
        [str(first["id"]), "firing", "critical", "non_finite", "a"],
    ]
    assert rows[0].endswith(second["message"])  # piped: the message is not cut

    out = gradwatch("alerts", "--run", "a", "--state", "firing", "--rank", "0", url=url)
    assert [r.split()[4] for r in out.stdout.splitlines()[1:]] == ["a"]
    out = gradwatch("alerts", "--json", "--rule", "non_finite", "--limit", "1", url=url)
    api = httpx.get(url + "/alerts", params={"rule": "non_finite", "limit": 1}).json()
    assert json.loads(out.stdout) == api and api["total"] == 2
    out = gradwatch("alerts", "--severity", "info", url=url)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "no alerts\n"

    out = gradwatch("ack", str(first["id"]), url=url)
    assert out.returncode == 0 and out.stdout.splitlines()[1].split()[1] == "firing,acked"
    assert collector_process.get(f"/alerts/{first['id']}")["acked"] is True
    out = gradwatch("ack", str(second["id"]), "--json", url=url)
    assert json.loads(out.stdout) == collector_process.get(f"/alerts/{second['id']}")


def test_cli_errors_are_one_line_with_an_exit_status(collector_process: CollectorProcess) -> None:
    url = collector_process.http
    dead = f"http://127.0.0.1:{free_port()}"
    cases = [
        (["ack", "99"], {}, 1, "gradwatch: HTTP 404: no alert with id 99"),
        (["alerts", "--state", "dozing"], {}, 1, "gradwatch: HTTP 422: query.state: Input should"),
        (["runs", "nope"], {}, 1, "gradwatch: HTTP 404: no live run named 'nope'"),
        (["runs", "--url", dead], {}, 1, f"gradwatch: cannot reach the collector at {dead}"),
        (["alerts", "--url", "nope"], {}, 2, "gradwatch: --url: must be an http(s) URL"),
        (["runs"], {"GRADWATCH_URL": "ftp://x"}, 2, "gradwatch: GRADWATCH_URL: must be"),
        (["runs", "--token-file", "/no/such"], {}, 2, "gradwatch: --token-file: cannot read"),
    ]
    for args, env, code, line in cases:
        out = gradwatch(*args, url=url, env=env)
        assert (out.returncode, out.stdout) == (code, ""), (args, out)
        assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith(line), (args, out)
    out = gradwatch("runs", "--url", url, env={"GRADWATCH_URL": dead})  # the flag wins
    assert out.returncode == 0


def test_cli_alerts_on_a_terminal_are_coloured_unless_no_color(
    collector_process: CollectorProcess,
) -> None:
    raise_nan(collector_process, "tty")
    env = {"GRADWATCH_URL": collector_process.http}
    coloured = on_terminal("alerts", env=env)
    assert f"{ESC}1;31mcritical{ESC}0m" in coloured and f"{ESC}1mfiring{ESC}0m" in coloured
    plain = on_terminal("alerts", env={**env, "NO_COLOR": "1"})
    assert ESC not in plain and "critical" in plain and "loss is nan" in plain


def test_cli_runs_lists_and_shows_one(collector_process: CollectorProcess) -> None:
    url = collector_process.http
    raise_nan(collector_process, "r1")
    out = gradwatch("runs", url=url)
    assert out.stdout.splitlines()[0].split() == ["RUN", "STATUS", "RANKS", "STEP", "FIRING",
                                                  "DROPPED", "LAST", "SEEN"]  # fmt: skip
    assert out.stdout.splitlines()[1].split()[:5] == ["r1", "ended", "1", "2", "1"]
    out = gradwatch("runs", "r1", url=url)
    assert out.stdout.splitlines()[1].split()[:5] == ["0", "testhost", "cpu", "AdamW", "2"]
    out = gradwatch("runs", "--json", url=url)
    assert json.loads(out.stdout) == collector_process.get("/runs")
    out = gradwatch("runs", "r1", "--json", url=url)
    assert json.loads(out.stdout) == collector_process.get("/runs/r1")


def test_cli_rules_lists_checks_and_documents(tmp_path: Path) -> None:
    out = gradwatch("rules")
    names = [line.split()[0] for line in out.stdout.splitlines()[1:]]
    assert out.returncode == 0 and names == list(CATALOGUE)
    assert gradwatch("rules", "--docs").stdout == (ROOT / "docs" / "rules.md").read_text()

    example = re.search(r"```toml\n(.*?)```", (ROOT / "docs" / "config.md").read_text(), re.S)
    assert example is not None
    good = tmp_path / "gradwatch.toml"
    good.write_text(example.group(1))
    out = gradwatch("rules", "--check", str(good))
    assert out.returncode == 0, out.stderr
    n = len(CATALOGUE)  # the example disables one rule
    overridden = "overridden: loss_spike, lr_sanity"
    assert out.stdout == f"{good}: ok; {n - 1} of {n} rules enabled; {overridden}\n"
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("rules:\n  loss_spike:\n    ratio: 20\n")
    assert gradwatch("rules", "--check", str(rules_file)).returncode == 0

    bad = tmp_path / "bad.toml"
    bad.write_text("[collector]\ntopk = 5\n[rules.loss_spike]\nratoi = 2\n")
    out = gradwatch("rules", "--check", str(bad))
    assert out.returncode == 2 and out.stderr.splitlines() == [
        f"gradwatch: {bad}: rules.loss_spike: unknown field(s) ['ratoi']; known: "
        "['action', 'clear_checks', 'cooldown_seconds', 'enabled', 'for_checks', 'min_history',"
        " 'ratio', 'warmup_steps', 'window', 'zscore', 'zscore_warmup']"
    ]
    bad.write_text("[collector]\ntopk = 0\n")
    out = gradwatch("rules", "--check", str(bad))
    assert (out.returncode, out.stderr) == (
        2, f"gradwatch: {bad}: collector.topk: must be positive, got 0\n"
    )  # fmt: skip


def test_cli_collector_subcommand_runs_the_collector(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    config = tmp_path / "gradwatch.toml"
    config.write_text(f'[collector]\nlisten = "tcp://127.0.0.1:0"\nready_file = "{ready}"\n')
    cmd = [PYTHON, "-m", "gradwatch.cli", "collector", "--config", str(config),
           "--http", "127.0.0.1:0", "--db", str(tmp_path / "g.db")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        info = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), 60)
        assert httpx.get(info["http"] + "/healthz").json()["ingest_alive"] is True
    finally:
        assert stop_process(proc) == 0
    out = gradwatch("collector", "--topk", "many")
    assert (out.returncode, out.stderr) == (
        2, "gradwatch collector: --topk: expected an integer, got 'many'\n"
    )  # fmt: skip
    out = gradwatch("--help")
    for command in ("collector", "alerts", "ack", "runs", "rules", "demo"):
        assert f"    {command}" in out.stdout


def test_cli_docs_name_every_command_and_flag() -> None:
    from gradwatch.cli.commands import parser

    text = (ROOT / "docs" / "cli.md").read_text()
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert f"gradwatch {name}" in text, name
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag == "--help" or not flag.startswith("--") or flag in text, (name, flag)
