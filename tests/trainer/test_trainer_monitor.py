"""How the trainer hands over to gradwatch's agent: settings from the agent's own defaults, and
a ``bye`` that says how the run ended (a real trainer process, a real ZeroMQ socket)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from gradwatch import wire
from gradwatch.agent import AgentConfig, watch
from gradwatch.agent.config import DEFAULT_ENDPOINT
from gradwatch.trainer.cli import parse_args
from gradwatch.trainer.model import GPT, GPTConfig
from gradwatch.trainer.optim import build_optimizer
from gradwatch.trainer.train import monitor_settings
from tests.helpers.frame_sink import FrameSink
from tests.helpers.trainer_runs import trainer_job

AGENT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(AgentConfig)}


def test_monitor_defaults_are_the_agent_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADWATCH_ENDPOINT", raising=False)
    model = GPT(GPTConfig.preset("tiny"))
    settings = monitor_settings(parse_args(["--run-name", "r"]), model)
    assert settings["every"] == AGENT_DEFAULTS["every"]
    assert settings["full_every"] == AGENT_DEFAULTS["full_every"]
    monitor = watch(model, build_optimizer("adamw", model), **settings)
    try:
        assert monitor.config.endpoint == DEFAULT_ENDPOINT == AGENT_DEFAULTS["endpoint"]
        assert (monitor.config.every, monitor.config.full_every) == (
            AGENT_DEFAULTS["every"],
            AGENT_DEFAULTS["full_every"],
        )
        assert monitor.config.run == "r"
    finally:
        monitor.close()


def test_monitor_flags_override_the_agent_defaults() -> None:
    args = parse_args(["--every", "3", "--full-every", "7", "--endpoint", "tcp://127.0.0.1:9"])
    settings = monitor_settings(args, GPT(GPTConfig.preset("tiny")))
    assert (settings["every"], settings["full_every"]) == (3, 7)
    assert settings["endpoint"] == "tcp://127.0.0.1:9"


def test_monitor_memory_limit_goes_to_the_agent_only_when_set() -> None:
    model = GPT(GPTConfig.preset("tiny"))
    assert "memory_limit_bytes" not in monitor_settings(parse_args([]), model)
    settings = monitor_settings(parse_args(["--memory-limit", "1000000000"]), model)
    takes_it = "memory_limit_bytes" in inspect.signature(watch).parameters
    assert settings.get("memory_limit_bytes") == (1_000_000_000 if takes_it else None)


@pytest.mark.parametrize(
    ("inject", "reason", "code"), [("hang@3", "terminated", 0), ("raise@3", "error", 1)]
)
def test_monitor_bye_says_how_the_run_ended(inject: str, reason: str, code: int) -> None:
    sink = FrameSink()
    try:
        with trainer_job(
            "--steps", "20", "--endpoint", sink.endpoint, "--run-name", "ending",
            "--inject", inject,
        ) as job:  # fmt: skip
            job.wait_for(f"inject {inject}:")
            returned = job.stop() if inject.startswith("hang") else job.wait()
        assert returned == code, job.output
        bye = sink.drain(wire.Bye)[-1]
        assert isinstance(bye, wire.Bye) and bye.reason == reason and bye.run == "ending"
        assert bye.step == 2
    finally:
        sink.close()
