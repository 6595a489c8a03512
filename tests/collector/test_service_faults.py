"""The collector process under bad settings, hostile names, oversized messages, shutdown under
load and restarts: one-line errors, honest log lines, counters that add up, nothing lost."""

from __future__ import annotations

import math
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zmq

from gradwatch import wire
from gradwatch.collector.store import Store
from tests.helpers.fake_rank import PARAMS, FakeRank
from tests.helpers.processes import PYTHON, CollectorProcess
from tests.helpers.push import push
from tests.helpers.waiting import wait_until


def _counter(proc: CollectorProcess, name: str, **labels: str) -> float:
    text = httpx.get(proc.http + "/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{name}{{{want}}} (\S+)$" if want else rf"^{name} (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else math.nan


def _collector(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "gradwatch.collector", "--listen", "tcp://127.0.0.1:0",
         "--http", "127.0.0.1:0", *argv],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only mount (root can write anywhere else); skipped without rights."""
    source, folder = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    folder.mkdir()
    (source / "old.db").write_bytes(b"")
    done = subprocess.run(["mount", "--bind", str(source), str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("missing/x.db", "folder"),
        ("", "is a directory"),
        ("junk.db", "not a database"),
    ],
)
def test_service_unusable_db_exits_2_with_one_line(tmp_path: Path, where: str, says: str) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is no sqlite file" * 100)
    out = _collector("--db", str(tmp_path / where))
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith(
        "gradwatch-collector: --db: "
    )
    assert says in out.stderr and "Traceback" not in out.stderr


def test_service_read_only_db_exits_2_with_one_line(read_only_folder: Path) -> None:
    for name, says in (("old.db", "read-only"), ("new.db", "not writable")):
        out = _collector("--db", str(read_only_folder / name))
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert says in out.stderr


def test_service_ports_in_use_exit_2_with_one_line(collector_process: CollectorProcess) -> None:
    for argv, flag in (
        (["--listen", collector_process.listen], "--listen"),
        (["--http", collector_process.http_addr], "--http"),
    ):
        out = subprocess.run(
            [PYTHON, "-m", "gradwatch.collector", "--db", ":memory:", "--listen",
             "tcp://127.0.0.1:0", "--http", "127.0.0.1:0", *argv],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 2 and out.stderr.startswith(f"gradwatch-collector: {flag}: ")
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_service_default_listens_on_loopback_and_warns_when_it_does_not(tmp_path: Path) -> None:
    from gradwatch.collector.config import CollectorConfig

    assert CollectorConfig().listen == "tcp://127.0.0.1:5555" and CollectorConfig().local_only
    proc = CollectorProcess(tmp_path)
    proc.listen = "tcp://0.0.0.0:0"
    with proc:
        assert "listens on tcp://0.0.0.0:0 without CURVE" in proc.log()
    (tmp_path / "loopback").mkdir()
    with CollectorProcess(tmp_path / "loopback") as quiet:
        assert "without CURVE" not in quiet.log()


def test_service_escapes_control_characters_in_names(collector_process: CollectorProcess) -> None:
    fake = "\n2099-01-01 00:00:00,000 CRITICAL gradwatch: all clear\x1b[2J"
    params = [(f"w{fake}", (4,), "float32"), *PARAMS[1:]]
    r = FakeRank(f"evil{fake}", params=params)
    push(collector_process.listen, [r.hello(), r.stats(1, grad={f"w{fake}": math.nan})])
    collector_process.wait_for_alert("non_finite")
    log = collector_process.log()
    assert "run=evil\\n2099-01-01" in log and "\\x1b[2J" in log
    assert not any(line.startswith("2099") for line in log.splitlines())
    assert "\x1b" not in log


def test_service_counts_oversized_messages_and_keeps_the_connection(
    collector_process: CollectorProcess,
) -> None:
    r = FakeRank("big")
    huge = b"\x00" * (wire.MAX_FRAME_BYTES + 2**20)  # 17 MiB: above the decoder's limit
    push(collector_process.listen, [r.hello(), huge, r.stats(1, loss=math.nan)])
    collector_process.wait_for_alert("non_finite")  # the frame after it still arrived
    assert _counter(collector_process, "gradwatch_frames_rejected_total", reason="oversized") == 1
    assert _counter(collector_process, "gradwatch_messages_total") == 3


def test_service_shutdown_under_load_finishes_flushes_and_counts_everything(
    tmp_path: Path,
) -> None:
    proc = CollectorProcess(tmp_path).start()
    stop, r = threading.Event(), FakeRank("busy")
    frames = [wire.encode(r.stats(step)) for step in range(1, 2001)]

    def flood() -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.connect(proc.listen)
        sock.send(wire.encode(r.hello()))
        i = 0
        while not stop.is_set():
            try:
                sock.send(frames[i % len(frames)], zmq.NOBLOCK)
                i += 1
            except zmq.Again:
                stop.wait(0.001)
        sock.close()
        ctx.term()

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        wait_until(
            lambda: (runs := proc.get("/runs")["runs"]) and runs[0]["ranks"][0]["frames"] > 500
        )
        assert proc.stop() == 0  # SIGTERM while frames keep coming
    finally:
        stop.set()
        sender.join(30)
        proc.stop()
    log = proc.log()
    found = re.search(r"stopped: (\d+) messages read, (\d+) accepted, (\d+) rejected", log)
    assert found, log[-2000:]
    read, accepted, rejected = map(int, found.groups())
    assert read == accepted + rejected and accepted > 500
    assert "Traceback" not in log and "still busy" not in log
    [record] = Store(proc.db).load_runs()  # what was accepted was flushed before closing
    assert record.frames == accepted


def test_service_restart_keeps_first_seen_and_counts(tmp_path: Path) -> None:
    proc = CollectorProcess(tmp_path).start()
    try:
        r = FakeRank("kept")
        push(proc.listen, [r.hello(), r.stats(1), r.stats(2), r.stats(3)])
        before = wait_until(lambda: (runs := proc.get("/runs")["runs"]) and runs[0]["ranks"][0])
        wait_until(lambda: Store(proc.db).load_runs() and Store(proc.db).load_runs()[0].frames == 4)
        proc.restart()
        push(proc.listen, [r.hello(), r.stats(4)])  # the agent's hello after it reconnects
        after = wait_until(
            lambda: (
                (runs := proc.get("/runs")["runs"])
                and runs[0]["ranks"][0]["live"]
                and runs[0]["ranks"][0]["last_step"] == 4
                and runs[0]["ranks"][0]
            )
        )
        assert after["first_seen"] == before["first_seen"] and after["frames"] == 6
    finally:
        proc.stop()


def test_service_http_connections_send_without_nagle_delay() -> None:
    """The listening socket says TCP, so asyncio sets TCP_NODELAY on each connection; without
    it every keep-alive response waited ~40 ms for the client's delayed ACK."""
    import asyncio
    import socket

    from gradwatch.collector.service import bind_http

    async def accepted_nodelay() -> int:
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                got.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        listener = bind_http("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        try:
            return await asyncio.wait_for(got, 30)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0
