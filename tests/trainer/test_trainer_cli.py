"""Command-line parsing of the trainer."""

from __future__ import annotations

import argparse

import pytest

from gradwatch.trainer.cli import DEFAULT_RUN, RUN_ENV, build_parser, parse_args
from gradwatch.trainer.faults import Injection, parse_injection


def test_cli_contract_flags_parse() -> None:
    args = parse_args(
        [
            "--steps", "300", "--endpoint", "tcp://127.0.0.1:5555", "--run-name", "r1",
            "--inject", "nan@100", "--inject", "freeze@50",
        ]
    )  # fmt: skip
    assert args.steps == 300 and args.endpoint == "tcp://127.0.0.1:5555" and args.run_name == "r1"
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
    actions = [a for a in build_parser()._actions if a.option_strings]
    assert all(a.help for a in actions)


def test_faults_parse_injection_normalizes_case() -> None:
    assert parse_injection("NaN@3") == Injection("nan", 3)


# -------------------------------------------------------------------------------------------
# the run name: --run-name > env GRADWATCH_RUN > "demo"; --run stays as a hidden alias


def test_cli_run_name_flag_beats_env_which_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUN_ENV, raising=False)
    assert parse_args([]).run_name == DEFAULT_RUN == "demo"
    monkeypatch.setenv(RUN_ENV, "from-env")
    assert parse_args([]).run_name == "from-env"
    assert parse_args(["--run-name", "from-flag"]).run_name == "from-flag"


def test_cli_old_run_flag_is_a_hidden_alias(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--run", "old"]).run_name == "old"
    build_parser().print_help()
    out = capsys.readouterr().out
    assert "--run-name" in out and "--run " not in out and "--run RUN" not in out


# -------------------------------------------------------------------------------------------
# every documented flag survives torchrun, which parses the whole line with prefix matching


def _torchrun_parse(trainer_argv: list[str]) -> list[str]:
    """What torchrun's own parser hands to the script (SystemExit on an ambiguous option)."""
    from torch.distributed.run import get_args_parser

    launcher = ["--standalone", "--nproc-per-node", "2", "-m", "gradwatch.trainer"]
    ns = get_args_parser().parse_args([*launcher, *trainer_argv])
    return list(ns.training_script_args)


def _documented_flags() -> list[tuple[str, bool]]:
    """(option, takes a value) for every flag shown in --help."""
    out = []
    for action in build_parser()._actions:
        if action.help == argparse.SUPPRESS or "-h" in action.option_strings:
            continue
        for opt in action.option_strings:
            out.append((opt, action.nargs != 0))
    return out


def test_cli_every_documented_flag_passes_torchruns_parser() -> None:
    flags = _documented_flags()
    assert {"--run-name", "--every", "--memory-limit", "--inject"} <= {f for f, _ in flags}
    argv = [x for flag, takes in flags for x in ((flag, "1") if takes else (flag,))]
    assert _torchrun_parse(argv) == argv


def test_cli_old_run_flag_is_ambiguous_to_torchrun(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _torchrun_parse(["--run", "x"])
    assert "ambiguous option: --run could match --run-path" in capsys.readouterr().err


def test_cli_monitoring_defaults_are_left_to_the_agent() -> None:
    args = parse_args([])
    assert args.every is None and args.full_every is None and args.endpoint is None


# -------------------------------------------------------------------------------------------
# injections with a rank, and the checks that need the job's shape


def test_faults_parse_injection_takes_an_optional_rank() -> None:
    assert parse_injection("hang@100:rank=1") == Injection("hang", 100, 1)
    assert str(Injection("hang", 100, 1)) == "hang@100:rank=1"
    assert parse_injection("raise@7") == Injection("raise", 7, None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("hang@5:rnk=1", "expected :rank=R"),
        ("hang@5:rank=x", "rank in 'hang@5:rank=x' must be an integer"),
        ("hang@5:rank=-1", "fault rank must be >= 0"),
        ("hang@5:rank=1", "names rank 1 of 1"),
        ("mem_pressure@5", "needs --memory-limit"),
    ],
)
def test_cli_rejects_bad_ranked_or_unbounded_inject(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--steps", "10", "--inject", value])
    assert message in capsys.readouterr().err


def _torchrun_env(monkeypatch: pytest.MonkeyPatch, rank: str = "0", world: str = "2") -> None:
    for key, value in {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": rank}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")


def test_cli_accepts_a_rank_of_the_job_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    _torchrun_env(monkeypatch)
    args = parse_args(["--steps", "10", "--inject", "slow@5:rank=1"])
    assert args.inject == [Injection("slow", 5, 1)]


def test_cli_rejects_bf16_under_torchrun(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _torchrun_env(monkeypatch)
    with pytest.raises(SystemExit):
        parse_args(["--steps", "10", "--inject", "bf16@5"])
    assert "does not work under torchrun" in capsys.readouterr().err


def test_cli_names_a_broken_torchrun_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _torchrun_env(monkeypatch, world="two")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "WORLD_SIZE: expected an integer, got 'two'" in capsys.readouterr().err


def test_cli_rejects_a_memory_limit_beyond_the_machine(capsys: pytest.CaptureFixture[str]) -> None:
    huge = str(1 << 60)
    with pytest.raises(SystemExit):
        parse_args(["--steps", "10", "--memory-limit", huge, "--inject", "mem_pressure@5"])
    assert "argument --memory-limit: 1152921504606846976 bytes is more than this cpu memory" in (
        capsys.readouterr().err
    )
    assert parse_args(["--memory-limit", huge]).memory_limit == 1 << 60  # only filling is unsafe
