"""No host synchronisation on the training thread while the hooks run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch

import gradwatch.agent as ga
from gradwatch import wire
from tests.helpers.frame_sink import FrameSink

_SYNCING = ("item", "cpu", "tolist", "__float__", "__bool__", "__int__", "numpy")


def test_nosync_hooks_make_no_host_reads_on_training_thread(
    sink: FrameSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    m[1].bias.requires_grad_(False)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    mon = ga.watch(m, opt, run="t", endpoint=sink.endpoint, full_every=2, scaler=scaler)
    sink.drain(until=wire.Hello)
    main = threading.get_ident()
    calls: list[str] = []
    armed = [False]

    def spy(name: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: torch.Tensor, *a: Any, **k: Any) -> Any:
            if armed[0] and threading.get_ident() == main:
                calls.append(name)
            return orig(self, *a, **k)

        return wrapper

    for name in _SYNCING:
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
    for _ in range(4):
        x = torch.randn(4, 8)
        armed[0] = True
        out = m(x)  # the forward hooks (phases) run here
        armed[0] = False
        loss = out.pow(2).mean()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        armed[0] = True
        # Everything else gradwatch does on the training thread: both hooks and log().
        mon._pre_hook(opt, (), {})
        mon._post_hook(opt, (), {})
        mon.log(loss=loss, tokens=torch.tensor(32))
        armed[0] = False
        opt.zero_grad()
        scaler.update()
    armed[0] = True
    mon.close()
    armed[0] = False
    assert calls == []
    assert mon.errors == 0
    sink.drain(until=wire.Bye)
    assert len(sink.of(wire.Stats)) == 4  # the spies did see the sender's reads work


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nosync_cuda_hooks_pass_sync_debug_mode_error(sink: FrameSink) -> None:
    m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)).cuda()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    mon = ga.watch(m, opt, run="t", endpoint=sink.endpoint, full_every=2)
    for _ in range(4):
        loss = m(torch.randn(4, 8, device="cuda")).pow(2).mean()
        loss.backward()
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
            mon.log(loss=loss)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        opt.zero_grad()
    mon.close()
    assert mon.errors == 0
