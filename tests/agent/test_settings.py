"""watch()'s settings: every AgentConfig field from an argument or its GRADWATCH_* variable
(argument > variable > default), errors naming where a bad value came from, and the table of
docs/agent.md equal to the fields."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import gradwatch.agent as ga
from gradwatch.agent.config import SETTINGS
from gradwatch.keys import make_keys
from gradwatch.settings import reference
from tests.helpers.frame_sink import FrameSink

DOCS = Path(__file__).resolve().parents[2] / "docs" / "agent.md"


def _values(sink: FrameSink, keys: Path) -> dict[str, tuple[str, Any]]:
    """A value other than the default for every field: as a variable's text, and as the
    value the config must then hold."""
    return {
        "run": ("from-env", "from-env"),
        "endpoint": (sink.endpoint, sink.endpoint),
        "curve_keys": (str(keys), str(keys)),
        "disabled": ("false", False),  # true is test_null's business
        "params": ("0.*", "0.*"),
        "rank": ("2", 2),
        "world_size": ("4", 4),
        "every": ("3", 3),
        "full_every": ("6", 6),
        "sample_size": ("17", 17),
        "send_hwm": ("9", 9),
        "queue_size": ("11", 11),
        "flush_seconds": ("0.05", 0.05),
        "heartbeat_seconds": ("2.5", 2.5),
        "stall_seconds": ("7", 7.0),
        "connect_warn_seconds": ("3", 3.0),
        "replicated": ("yes", True),
        "report_signals": ("0", False),
        "close_timeout_seconds": ("0.5", 0.5),
        "memory_limit_bytes": ("1000000", 1_000_000),
        "on_alert": ("non_finite=stop,*=notify", "non_finite=stop,*=notify"),
        "flops_per_token": ("6e6", 6e6),
        "peak_flops": ("1e12", 1e12),
    }


def _model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    return m, torch.optim.SGD(m.parameters(), lr=0.1)


def test_settings_every_field_comes_from_its_variable(
    sink: FrameSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_keys(tmp_path)
    values = _values(sink, tmp_path / "trainer")
    assert set(values) == {s.field for s in SETTINGS}, "a new setting needs a value here"
    for s in SETTINGS:
        monkeypatch.setenv(s.env, values[s.field][0])
    monkeypatch.setenv("RANK", "0")  # torchrun's variables lose to GRADWATCH_RANK
    monkeypatch.setenv("WORLD_SIZE", "1")
    m, opt = _model()
    mon = ga.watch(m, opt)
    mon.close()
    got = {s.field: getattr(mon.config, s.field) for s in SETTINGS}
    assert got == {name: want for name, (_, want) in values.items()}


def test_settings_argument_wins_over_variable_and_none_counts_as_not_given(
    sink: FrameSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADWATCH_RUN", "env-run")
    monkeypatch.setenv("GRADWATCH_ENDPOINT", sink.endpoint)
    monkeypatch.setenv("GRADWATCH_EVERY", "5")
    monkeypatch.setenv("GRADWATCH_PEAK_FLOPS", "1e12")
    monkeypatch.setenv("GRADWATCH_REPLICATED", "true")
    m, opt = _model()
    mon = ga.watch(m, opt, run="arg-run", every=2, peak_flops=None, replicated=False)
    mon.close()
    cfg = mon.config
    assert (cfg.run, cfg.every, cfg.peak_flops, cfg.replicated) == ("arg-run", 2, 1e12, False)
    assert cfg.full_every == ga.AgentConfig.default("full_every")  # neither: the default


def test_settings_rank_comes_from_torchrun_variables_when_gradwatch_says_nothing(
    sink: FrameSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    m, opt = _model()
    with ga.watch(m, opt, run="t", endpoint=sink.endpoint) as mon:
        assert (mon.config.rank, mon.config.world_size) == (3, 8)
    monkeypatch.setenv("RANK", "three")
    with pytest.raises(ValueError, match="^RANK: expected an integer, got 'three'$"):
        ga.watch(m, opt, run="t", endpoint=sink.endpoint)


@pytest.mark.parametrize(
    ("env", "kwargs", "message"),
    [
        ({"GRADWATCH_EVERY": "x"}, {}, "GRADWATCH_EVERY: expected an integer, got 'x'"),
        ({"GRADWATCH_EVERY": "0"}, {}, "GRADWATCH_EVERY: must be a positive integer, got 0"),
        ({}, {"every": 0}, "every: must be a positive integer, got 0"),
        ({"GRADWATCH_REPLICATED": "maybe"}, {}, "GRADWATCH_REPLICATED: expected true or false"),
        ({"GRADWATCH_PEAK_FLOPS": "-1"}, {}, "GRADWATCH_PEAK_FLOPS: must be > 0 when given"),
        ({"GRADWATCH_ENDPOINT": "localhost"}, {}, "GRADWATCH_ENDPOINT: 'localhost' is not"),
        ({"GRADWATCH_RANK": "5"}, {}, r"GRADWATCH_RANK: must be in \[0, world_size\)"),
        ({"GRADWATCH_RUN": ""}, {}, "GRADWATCH_RUN: must be a non-empty name"),
        ({"GRADWATCH_PARAMS": " , "}, {}, "GRADWATCH_PARAMS: no glob pattern"),
    ],
)
def test_settings_bad_value_raises_value_error_naming_its_origin(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kwargs: dict[str, Any], message: str
) -> None:
    monkeypatch.setenv("GRADWATCH_RUN", "t")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    m, opt = _model()
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match=f"^{message}"):
        ga.watch(m, opt, **kwargs)
    assert set(threading.enumerate()) == before  # nothing started
    assert not opt._optimizer_step_post_hooks  # nothing attached


def test_settings_without_a_run_say_where_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADWATCH_RUN", raising=False)
    m, opt = _model()
    with pytest.raises(ValueError, match="^run: must be a non-empty name"):
        ga.watch(m, opt)


def test_settings_table_in_agent_docs_equals_the_fields() -> None:
    table = reference(SETTINGS, keys=False, arguments=True)
    assert table in DOCS.read_text(), "docs/agent.md's settings table is stale: paste " + table
