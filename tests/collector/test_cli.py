"""The collector's flags and variables are derived from its config: all there, all documented,
and a bad value's error names where it came from."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from gradwatch.collector.cli import SETTINGS, config_from_args, parser
from gradwatch.collector.config import CollectorConfig
from gradwatch.settings import ConfigError
from tests.helpers.processes import PYTHON


def test_cli_every_config_field_is_a_documented_flag_and_variable() -> None:
    fields = [f.name for f in dataclasses.fields(CollectorConfig)]
    assert [s.field for s in SETTINGS] == fields
    text = parser().format_help()
    for s in SETTINGS:
        assert s.help, f"{s.field} has no docstring"
        assert s.flag in text and s.env in text, s.field
    assert {s.flag for s in SETTINGS} >= {"--listen", "--http", "--db", "--rules", "--ready-file",
                                          "--alertmanager", "--alertmanager-resend", "--topk",
                                          "--public-url", "--retention-days", "--grace-seconds",
                                          "--log-level"}  # fmt: skip


def test_cli_flag_wins_over_variable_wins_over_default() -> None:
    env = {"GRADWATCH_TOPK": "7", "GRADWATCH_DB": "env.db"}
    config = config_from_args(parser().parse_args(["--db", "flag.db"]), env)
    assert (config.db_path, config.topk, config.grace_seconds) == ("flag.db", 7, 300.0)
    config = config_from_args(parser().parse_args(["--http", "127.0.0.1:9"]), {})
    assert (config.http_host, config.http_port) == ("127.0.0.1", 9)


@pytest.mark.parametrize(
    ("argv", "env", "where", "says"),
    [
        (["--topk", "x"], {}, "--topk", "expected an integer"),
        ([], {"GRADWATCH_TOPK": "0"}, "GRADWATCH_TOPK", "must be positive"),
        (["--http", "nowhere"], {}, "--http", "HOST:PORT"),
        (["--tick-seconds", "-1"], {}, "--tick-seconds", "must be positive"),
        ([], {"GRADWATCH_ALERTMANAGER": "am:9093"}, "GRADWATCH_ALERTMANAGER", "http(s) URL"),
    ],
)
def test_cli_bad_value_names_its_flag_or_variable(
    argv: list[str], env: dict[str, str], where: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_args(parser().parse_args(argv), env)
    assert info.value.where == where and says in info.value.message


def test_cli_bad_setting_exits_2_with_one_line() -> None:
    out = subprocess.run(
        [PYTHON, "-m", "gradwatch.collector", "--keepalive-seconds", "soon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "gradwatch-collector: --keepalive-seconds: expected a number, got 'soon'"
    ]
