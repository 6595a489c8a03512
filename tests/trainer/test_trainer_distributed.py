"""torchrun detection from the environment, and the weights digest the DDP summary prints."""

from __future__ import annotations

import pytest
import torch

from gradwatch.trainer.distributed import TORCHRUN_ENV, Dist, detect, weights_digest
from gradwatch.trainer.model import GPT, GPTConfig

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1"}


def test_distributed_detects_torchrun_from_its_variables() -> None:
    d = detect(TORCHRUN)
    assert d == Dist(rank=1, world_size=2, local_rank=1, launched=True)
    assert d.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert d.backend == ("nccl" if torch.cuda.is_available() else "gloo")


@pytest.mark.parametrize("missing", TORCHRUN_ENV)
def test_distributed_runs_alone_when_any_variable_is_missing(missing: str) -> None:
    env = {k: v for k, v in TORCHRUN.items() if k != missing}
    d = detect(env)
    assert d == Dist() and not d.launched
    assert d.device == torch.device("cpu")  # alone it stays a CPU run, as it always was


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RANK", "one", "RANK: expected an integer"),
        ("RANK", "2", "RANK: must be in [0, 2)"),
        ("WORLD_SIZE", "0", "WORLD_SIZE: must be >= 1"),
        ("LOCAL_RANK", "-1", "LOCAL_RANK: must be >= 0"),
    ],
)
def test_distributed_names_a_bad_variable(key: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        detect({**TORCHRUN, key: value})


def test_distributed_start_and_wrap_are_no_ops_alone() -> None:
    model = GPT(GPTConfig.preset("tiny"))
    Dist().start()
    assert Dist().wrap(model) is model
    Dist().stop()


def test_distributed_weights_digest_tells_replicas_apart() -> None:
    torch.manual_seed(0)
    a = GPT(GPTConfig.preset("tiny"))
    torch.manual_seed(0)
    b = GPT(GPTConfig.preset("tiny"))
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.head.weight[0, 0] += 1e-6  # one element, barely
    assert weights_digest(a) != weights_digest(b)
