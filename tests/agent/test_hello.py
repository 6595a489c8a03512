"""What the hello says about the model's layout across ranks and its device."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import gradwatch.agent as ga
from gradwatch import wire
from tests.helpers.frame_sink import FrameSink


@pytest.fixture
def gloo_group(tmp_path: Path) -> Iterator[None]:
    """A real one-process gloo group (rank 0 of 1), torn down after the test."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _hello_of(sink: FrameSink, model: torch.nn.Module, **settings: object) -> wire.Hello:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ga.watch(model, opt, run="t", endpoint=sink.endpoint, **settings) as mon:
        sink.drain(until=wire.Hello)
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
    assert mon.errors == 0
    sink.drain(until=wire.Bye)
    hello = sink.of(wire.Hello)[0]
    assert isinstance(hello, wire.Hello)
    return hello


def test_hello_plain_model_on_cpu_is_not_replicated_and_has_no_device_uuid(
    sink: FrameSink,
) -> None:
    hello = _hello_of(sink, torch.nn.Linear(4, 2))
    assert (hello.replicated, hello.sharded, hello.device_uuid) == (False, (), "")


def test_hello_says_replicated_when_told(sink: FrameSink) -> None:
    assert _hello_of(sink, torch.nn.Linear(4, 2), replicated=True).replicated


def test_hello_says_replicated_for_ddp(sink: FrameSink, gloo_group: None) -> None:
    ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    hello = _hello_of(sink, ddp)
    assert hello.replicated and hello.sharded == ()
    assert [p.name for p in hello.params] == ["module.weight", "module.bias"]
    assert (hello.rank, hello.world_size) == (0, 1)  # from the process group


def test_hello_lists_dtensor_parameters_as_sharded(sink: FrameSink, gloo_group: None) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    class WithTable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)
            # A frozen sharded table beside the trained layer (sharded parameters are declared;
            # the agent's reducers take plain tensors).
            table = distribute_tensor(torch.randn(8, 2), init_device_mesh("cpu", (1,)), [Shard(0)])
            self.table = torch.nn.Parameter(table, requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)  # type: ignore[no-any-return]

    hello = _hello_of(sink, WithTable())
    assert [p.name for p in hello.params] == ["table", "lin.weight", "lin.bias"]
    assert hello.sharded == (0,)
