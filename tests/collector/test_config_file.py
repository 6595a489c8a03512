"""The collector's config file: keys derived from CollectorConfig, precedence flag > variable >
file > default, errors that name FILE: collector.key, rules from the same file, the printed
effective config, docs/config.md generated from the code, and a live collector started from it."""

from __future__ import annotations

import dataclasses
import math
import subprocess
from pathlib import Path

import pytest

from gradwatch.cli.docs import render
from gradwatch.collector.cli import SETTINGS, config_from_args, gather_config, parser, render_config
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.rules import RulesError, overrides
from gradwatch.settings import ConfigError, build, gather
from tests.helpers.fake_rank import FakeRank
from tests.helpers.live import send_frames
from tests.helpers.processes import PYTHON, CollectorProcess

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_config_file_keys_are_the_flags_of_every_field() -> None:
    keyed = {s.field: s.key for s in SETTINGS if s.key}
    fields = [f.name for f in dataclasses.fields(CollectorConfig)]
    assert list(keyed) == [f for f in fields if f != "config_path"]  # the file cannot name a file
    for s in SETTINGS:
        assert not s.key or s.flag == "--" + s.key.replace("_", "-")
    assert (
        keyed["db_path"] == "db" and keyed["alertmanager_resend_seconds"] == "alertmanager_resend"
    )


def test_config_file_precedence_flag_then_variable_then_file_then_default(tmp_path: Path) -> None:
    path = write(tmp_path / "g.toml", '[collector]\ndb = "file.db"\ntopk = 3\ngrace_seconds = 10\n'
                 'retention_days = 7\nalertmanager_insecure = true\nrules = ""\n')  # fmt: skip
    env = {"GRADWATCH_TOPK": "7", "GRADWATCH_RETENTION_DAYS": "2"}
    args = parser().parse_args(["--config", path, "--db", "flag.db", "--retention-days", "1"])
    config = config_from_args(args, env)
    assert (config.db_path, config.topk, config.grace_seconds, config.retention_days) == (
        "flag.db", 7, 10.0, 1.0
    )  # fmt: skip
    assert config.alertmanager_insecure is True and config.rules_path is None
    assert config.tick_seconds == 1.0 and config.config_path == path
    by_variable = config_from_args(parser().parse_args([]), {"GRADWATCH_CONFIG": path})
    assert (by_variable.db_path, by_variable.grace_seconds) == ("file.db", 10.0)


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("[collector]\ntopK = 5\n", "collector.topK", "unknown setting; did you mean 'topk'?"),
        ("[collector]\ntopk = 0\n", "collector.topk", "must be positive, got 0"),
        ('[collector]\ntopk = "5"\n', "collector.topk", "expected an integer, got '5'"),
        ("[collector]\ntick_seconds = true\n", "collector.tick_seconds", "expected a number"),
        (
            '[collector]\nalertmanager_insecure = "yes"\n',
            "collector.alertmanager_insecure",
            "expected true or false",
        ),  # fmt: skip
        ('[collector]\nhttp = "nowhere"\n', "collector.http", "HOST:PORT"),
        ('[collector]\nconfig = "other.toml"\n', "collector.config", "unknown setting"),
        ("[collectr]\n", "collectr", "unknown table"),
        ("collector = 1\n", "collector", "must be a table"),
    ],
)
def test_config_file_bad_value_names_file_and_key(
    tmp_path: Path, text: str, where: str, says: str
) -> None:
    path = write(tmp_path / "g.toml", text)
    with pytest.raises(ConfigError) as info:
        config_from_args(parser().parse_args(["--config", path]), {})
    assert info.value.where == f"{path}: {where}" and says in info.value.message


def test_config_file_unreadable_or_not_toml_names_the_file(tmp_path: Path) -> None:
    for path, says in [(tmp_path / "none.toml", "cannot read"),
                       (Path(write(tmp_path / "bad.toml", "x = ")), "not valid TOML")]:  # fmt: skip
        with pytest.raises(ConfigError) as info:
            config_from_args(parser().parse_args([]), {"GRADWATCH_CONFIG": str(path)})
        assert info.value.where == str(path) and says in info.value.message


def test_config_file_rules_merge_under_the_rules_file(tmp_path: Path) -> None:
    config = write(tmp_path / "g.toml", "[rules.loss_spike]\nratio = 20.0\nwindow = 50\n"
                   "[rules.lr_sanity]\nenabled = false\n")  # fmt: skip
    rules = write(tmp_path / "r.yaml", "rules:\n  loss_spike:\n    ratio: 30\n")
    assert overrides(config, rules) == {
        "loss_spike": {"ratio": 30, "window": 50},
        "lr_sanity": {"enabled": False},
    }
    bad = write(tmp_path / "bad.toml", "[rules.loss_spike]\nratoi = 2\n")
    with pytest.raises(
        RulesError, match=r"bad.toml: rules.loss_spike: unknown field\(s\) \['ratoi'\]"
    ):
        overrides(bad)


def test_config_file_printed_config_reads_back_the_same(tmp_path: Path) -> None:
    path = write(tmp_path / "g.toml", '[collector]\ntopk = 3\nalertmanager = "http://am:9093"\n'
                 "[rules.loss_spike]\nratio = 20.0\n")  # fmt: skip
    args = parser().parse_args(["--config", path, "--tick-seconds", "2"])
    gathered = gather_config(args, {"GRADWATCH_GRACE_SECONDS": "12"})
    config = build(CollectorConfig, gathered)
    text = render_config(config, gathered, overrides(path))
    assert "topk = 3  # " + path + ": collector.topk" in text
    assert "tick_seconds = 2.0  # --tick-seconds" in text
    assert "grace_seconds = 12.0  # GRADWATCH_GRACE_SECONDS" in text
    assert 'listen = "tcp://127.0.0.1:5555"  # default' in text
    printed = write(tmp_path / "printed.toml", text)
    again = config_from_args(parser().parse_args(["--config", printed]), {})
    assert dataclasses.replace(again, config_path=path) == config
    assert overrides(printed) == {"loss_spike": {"ratio": 20.0}}
    assert build(CollectorConfig, gather(SETTINGS, {}, {}, None)) == CollectorConfig()


def test_config_file_docs_are_generated_from_the_code() -> None:
    assert (ROOT / "docs" / "config.md").read_text() == render(), (
        "docs/config.md is stale: run `make docs`"
    )


def test_config_file_starts_a_live_collector_and_a_bad_one_stops_it(tmp_path: Path) -> None:
    config = write(tmp_path / "g.toml", "[collector]\ntopk = 2\n"
                   "[rules.trainer_silent]\nfloor_seconds = 1.0\n"
                   "[rules.non_finite]\nenabled = false\n")  # fmt: skip
    proc = CollectorProcess(tmp_path, "--config", config).start()
    try:
        r = FakeRank("quiet")
        send_frames(proc.listen, [r.hello(), r.stats(1), r.stats(2, loss=math.nan)])
        assert proc.wait_for_alert("trainer_silent", timeout=30)["run"] == "quiet"
        # the NaN frame came before the silence: non_finite is off, so it raised nothing
        assert [a["rule"] for a in proc.alerts()] == ["trainer_silent"]
    finally:
        proc.stop()
    bad = write(tmp_path / "bad.toml", "[collector]\nkeepalive_seconds = -1\n")
    out = subprocess.run(
        [PYTHON, "-m", "gradwatch.collector", "--config", bad], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and out.stderr.splitlines() == [
        f"gradwatch-collector: {bad}: collector.keepalive_seconds: must not be negative, got -1.0"
    ]
