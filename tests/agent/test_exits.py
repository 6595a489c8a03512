"""Crash reports: a ``bye`` says how a rank ended (error with its details, or terminated by a
signal), and the user's own excepthook and signal handlers still run."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import gradwatch.agent as ga
from gradwatch import wire
from gradwatch.agent import exits
from tests.helpers.frame_sink import FrameSink

ROOT = Path(__file__).resolve().parents[2]
_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    """A test that fails before ``_finish`` still leaves no process behind."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _start(sink: FrameSink, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.crashing_rank", sink.endpoint, mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _STARTED.append(proc)
    return proc


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out


def _bye(sink: FrameSink) -> wire.Bye:
    sink.drain(until=wire.Bye, timeout=60)
    bye = sink.of(wire.Bye)[0]
    assert isinstance(bye, wire.Bye)
    return bye


def test_exits_uncaught_exception_sends_its_type_message_and_stack(sink: FrameSink) -> None:
    proc = _start(sink, "raise")
    bye = _bye(sink)
    code, out = _finish(proc)
    assert code == 1
    assert "user excepthook ran: ValueError" in out  # chained, not replaced
    assert (bye.reason, bye.error_type, bye.error_kind) == ("error", "ValueError", "exception")
    assert bye.error_message.startswith("loss went sideways: xxx")
    assert len(bye.error_message) == wire.MAX_ERROR_MESSAGE
    assert bye.stack[0].endswith(" in explode_with_a_long_message")
    assert "crashing_rank.py" in bye.stack[0]
    assert bye.step == 3 and bye.signal == 0


def test_exits_out_of_memory_is_named_oom_when_closed_in_a_finally_block(
    sink: FrameSink,
) -> None:
    proc = _start(sink, "oom")
    bye = _bye(sink)
    code, out = _finish(proc)
    assert code == 1 and "user excepthook ran: OutOfMemoryError" in out
    assert (bye.reason, bye.error_kind) == ("error", "oom")
    assert bye.error_type == "torch.OutOfMemoryError"
    assert "Tried to allocate 20.00 GiB" in bye.error_message
    assert bye.stack[0].endswith(" in allocate_activations")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_exits_signal_with_default_handling_says_terminated_and_still_kills(
    sink: FrameSink, sig: signal.Signals
) -> None:
    proc = _start(sink, "default-signal")
    sink.drain(until=wire.Stats, timeout=60)  # it is training
    proc.send_signal(sig)
    bye = _bye(sink)
    code, out = _finish(proc)
    assert (bye.reason, bye.signal, bye.error_type) == ("terminated", int(sig), "")
    assert bye.stack  # where the main thread was when the signal arrived
    # SIGTERM kills as the default disposition would; SIGINT's default is KeyboardInterrupt,
    # which Python turns into death by SIGINT at exit.
    assert code == -int(sig), out


def test_exits_user_sigterm_handler_that_raises_still_runs(sink: FrameSink) -> None:
    proc = _start(sink, "user-handler")
    sink.drain(until=wire.Stats, timeout=60)
    proc.send_signal(signal.SIGTERM)
    bye = _bye(sink)
    code, out = _finish(proc)
    assert code == 0
    assert "user handler ran: 15" in out and "stopped" in out
    assert (bye.reason, bye.signal) == ("terminated", 15)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "oom"),
        (RuntimeError("CUDA error: out of memory"), "oom"),
        (MemoryError(), "oom"),
        (torch.distributed.DistBackendError("NCCL error in: ProcessGroupNCCL.cpp"), "distributed"),
        (RuntimeError("[Rank 3] Watchdog caught collective operation timeout"), "distributed"),
        (RuntimeError("Gloo connectFullMesh failed"), "distributed"),
        (ValueError("shapes do not match"), "exception"),
    ],
)
def test_exits_error_kinds(exc: BaseException, kind: str) -> None:
    assert exits.error_kind(exc) == kind


def test_exits_error_kind_looks_through_the_cause_chain() -> None:
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory")
        except torch.OutOfMemoryError as inner:
            raise RuntimeError("training step failed") from inner
    except RuntimeError as outer:
        info = exits.of_exception(outer)
    assert (info.error_type, info.error_kind) == ("RuntimeError", "oom")


def test_exits_system_exit_zero_is_a_normal_close() -> None:
    assert exits.of_exception(SystemExit(0)).reason == "close"
    assert exits.of_exception(SystemExit(2)).error_message == "exit code 2"


def test_exits_with_block_reports_the_exception_and_restores_the_hooks(
    sink: FrameSink,
) -> None:
    before = (sys.excepthook, signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    m = torch.nn.Linear(2, 2)
    with pytest.raises(KeyError):
        with ga.watch(m, torch.optim.SGD(m.parameters(), lr=0.1), run="t", endpoint=sink.endpoint):
            sink.drain(until=wire.Hello)
            assert sys.excepthook is not before[0]
            raise KeyError("missing batch")
    bye = _bye(sink)
    assert (bye.reason, bye.error_type, bye.error_kind) == ("error", "KeyError", "exception")
    assert bye.error_message == "'missing batch'"
    after = (sys.excepthook, signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    assert after == before


def test_exits_explicit_close_inside_a_handled_exception_keeps_its_reason(
    sink: FrameSink,
) -> None:
    m = torch.nn.Linear(2, 2)
    mon = ga.watch(m, torch.optim.SGD(m.parameters(), lr=0.1), run="t", endpoint=sink.endpoint)
    sink.drain(until=wire.Hello)
    try:
        raise TimeoutError("eval server slow")
    except TimeoutError:
        mon.close("close")  # handled: the caller says the run ended normally
    bye = _bye(sink)
    assert (bye.reason, bye.error_type) == ("close", "")
