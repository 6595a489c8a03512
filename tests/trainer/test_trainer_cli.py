"""Command-line parsing of the trainer."""

from __future__ import annotations

import pytest

from gradwatch.trainer.cli import parse_args
from gradwatch.trainer.faults import Injection, parse_injection


def test_cli_contract_flags_parse() -> None:
    args = parse_args(
        [
            "--steps", "300", "--endpoint", "tcp://127.0.0.1:5555", "--run", "r1",
            "--inject", "nan@100", "--inject", "freeze@50",
        ]
    )  # fmt: skip
    assert args.steps == 300 and args.endpoint == "tcp://127.0.0.1:5555" and args.run == "r1"
    assert args.inject == [Injection("nan", 100), Injection("freeze", 50)]
    assert args.size == "demo" and args.optimizer == "adamw" and not args.no_monitor


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("boom@10", "unknown fault kind 'boom'"),
        ("nan@x", "must be an integer"),
        ("nan", "expected KIND@STEP"),
        ("nan@0", "must be >= 1"),
        ("nan@500", "after the last step"),
    ],
)
def test_cli_rejects_bad_inject_with_clear_message(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--steps", "100", "--inject", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--inject" in err and message in err


@pytest.mark.parametrize(
    "argv", [["--size", "huge"], ["--optimizer", "lamb"], ["--steps", "0"], ["--lr", "-1"]]
)
def test_cli_rejects_bad_values(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_cli_every_flag_has_help() -> None:
    from gradwatch.trainer.cli import build_parser

    actions = [a for a in build_parser()._actions if a.option_strings]
    assert all(a.help for a in actions)


def test_faults_parse_injection_normalizes_case() -> None:
    assert parse_injection("NaN@3") == Injection("nan", 3)
