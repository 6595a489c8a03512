"""``gradwatch demo`` (``make demo``): a collector and a demo training run with scripted faults;
alerts print as they fire.

The collector listens on tcp://127.0.0.1:5555 and serves http://127.0.0.1:8000. The trainer runs a
small GPT on the shipped corpus and injects a loss spike, a NaN and a learning-rate explosion into
three runs, one after another. With ``--ddp`` (``make demo-ddp``) it runs 2-rank torchrun jobs
(DDP, gloo on CPU) instead, each with one rank at fault: a hang, a straggler, a NaN and a crash,
each raising one alert for the job that names the rank; jobs that would run on (a hang, a
straggler) stop once their alert fires, or after a minute. When training is done the collector
keeps serving until Ctrl-C. Needs the agent and collector extras (torch included).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from gradwatch.client import Alert, Client, ClientError
from gradwatch.collector.rank_ranges import compact_ranks


@dataclass(frozen=True)
class DemoRun:
    """One demo job: each shows one failure the way it happens in real training."""

    run: str
    faults: tuple[str, ...]
    nproc: int = 1
    """Ranks; above 1 the job runs under torchrun (DDP)."""
    until: str | None = None
    """Stop the job once this rule fires on it (a job that would run on: a hang, a straggler)."""


SCHEDULE = [
    DemoRun("demo-spike", ("spike@60",)),
    DemoRun("demo-explode", ("explode@60",)),
    DemoRun("demo-nan", ("nan@60",)),
]
DDP_SCHEDULE = [
    DemoRun("demo-ddp-hang", ("hang@40:rank=1",), 2, until="rank_stalled"),
    DemoRun("demo-ddp-straggler", ("slow@30:rank=1",), 2, until="straggler"),
    DemoRun("demo-ddp-nan", ("nan@60:rank=1",), 2),
    DemoRun("demo-ddp-crash", ("raise@60:rank=1",), 2),
]
DDP_RULES = {"rank_stalled": {"seconds": 10.0}, "straggler": {"for_seconds": 5.0}}
"""The multi-rank demo's rules: a 10 s hang is a stall, a 5 s straggler is reported."""
DDP_AGENT = ("--heartbeat-seconds", "1", "--stall-seconds", "3")
"""Heartbeats every second, stacks after 3 s without a step."""
STEPS = 90
UNTIL_SECONDS = 60.0
"""Longest a job that would run on is kept waiting for its alert."""
COLOURS = {"critical": "\033[1;31m", "error": "\033[31m", "warning": "\033[33m", "info": "\033[36m"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http-port", type=int, default=8000, help="collector HTTP port")
    p.add_argument("--zmq-port", type=int, default=5555, help="collector ZeroMQ port")
    p.add_argument("--workdir", default=".demo", help="where the database and logs go (wiped)")
    p.add_argument("--exit", action="store_true", help="exit when training is done")
    p.add_argument(
        "--ddp",
        action="store_true",
        help="run 2-rank torchrun jobs (DDP) with one rank at fault: hang, straggler, NaN, crash",
    )


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def _print_alert(alert: Alert) -> None:
    colour = COLOURS.get(alert.severity, "") if sys.stdout.isatty() else ""
    reset = "\033[0m" if colour else ""
    where = f"run={alert.run} rank={alert.rank} step={alert.first_step}"
    if len(alert.covers) > 1:
        where += f" ranks={compact_ranks(alert.covers)}"
    if alert.parameter:
        where += f" param={alert.parameter}"
    print(f"{colour}ALERT {alert.rule} [{alert.severity}]{reset} {where}", flush=True)
    print(f"      {alert.message}", flush=True)
    if alert.action:
        print(f"      what to do: {alert.action}", flush=True)


def _print_firing(url: str, seen: set[int]) -> None:
    """Print each alert the first time it fires (a daemon thread; the stream resumes itself)."""
    for alert in Client(url).stream(state="firing"):
        if alert.id not in seen:
            seen.add(alert.id)
            _print_alert(alert)


def demo(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("torch") is None:
        need = "gradwatch demo needs torch: pip install 'gradwatch[agent,collector]'"
        print(need, file=sys.stderr)
        return 2
    for port in (args.http_port, args.zmq_port):
        if not _port_free("127.0.0.1", port):
            print(f"port {port} is in use: stop whatever holds it, or pass --http-port/--zmq-port",
                  file=sys.stderr)  # fmt: skip
            return 2
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    endpoint = f"tcp://127.0.0.1:{args.zmq_port}"
    http = f"http://127.0.0.1:{args.http_port}"
    procs: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # even where a parent started us with SIGINT ignored
    log = (work / "collector.log").open("wb")
    collector_cmd = [
        sys.executable, "-m", "gradwatch.collector", "--listen", endpoint,
        "--http", f"127.0.0.1:{args.http_port}", "--db", str(work / "gradwatch.db"),
    ]  # fmt: skip
    if args.ddp:
        rules = work / "rules.json"  # JSON is YAML
        rules.write_text(json.dumps({"rules": DDP_RULES}))
        collector_cmd += ["--rules", str(rules)]
    procs.append(subprocess.Popen(collector_cmd, stdout=log, stderr=subprocess.STDOUT))
    seen: set[int] = set()
    client = Client(http)
    try:
        _wait_healthy(client, procs[0], work)
        print(f"collector up: open {http} in a browser (log: {work / 'collector.log'})", flush=True)
        threading.Thread(target=_print_firing, args=(http, seen), daemon=True).start()
        for job in DDP_SCHEDULE if args.ddp else SCHEDULE:
            where = f" on {job.nproc} ranks (DDP)" if job.nproc > 1 else ""
            print(f"\n== training {job.run}{where} with {', '.join(job.faults)} ==", flush=True)
            trainer = subprocess.Popen(_trainer_cmd(job, endpoint), start_new_session=True)
            procs.append(trainer)
            if job.until is None:
                trainer.wait()
                _wait_ended(client, job.run)
            else:
                _wait_alert(client, job, trainer)
                _stop([trainer])
        port = args.http_port
        url = "" if port == 8000 else f" --url {http}"
        example = DDP_SCHEDULE[0].run if args.ddp else "demo-nan"
        print(
            f"\ntraining done: {len(seen)} alerts. Try:\n  gradwatch alerts{url}"
            f"\n  gradwatch alerts{url} --follow\n  gradwatch runs{url} {example}"
            f"\n  curl localhost:{port}/alerts\n  curl localhost:{port}/runs/{example}"
            f"\n  curl localhost:{port}/metrics"
        )
        if args.exit:
            return 0
        print("collector still serving; Ctrl-C stops it.", flush=True)
        procs[0].wait()
        print(f"collector exited; see {work / 'collector.log'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        _stop(procs)
        log.close()


def _trainer_cmd(job: DemoRun, endpoint: str) -> list[str]:
    steps = STEPS if job.until is None else 100_000  # a job that runs on until its alert
    args = [
        "--steps", str(steps), "--endpoint", endpoint, "--run-name", job.run, "--size", "tiny",
        "--log-every", "10",
    ]  # fmt: skip
    for fault in job.faults:
        args += ["--inject", fault]
    if job.nproc == 1:
        return [sys.executable, "-m", "gradwatch.trainer", *args]
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(job.nproc), "-m", "gradwatch.trainer", "--threads", "1",
        *DDP_AGENT, *args,
    ]  # fmt: skip


def _wait_alert(client: Client, job: DemoRun, trainer: subprocess.Popen[bytes]) -> None:
    """Until ``job.until`` fires on the job (or it ends, or a minute passes)."""
    deadline = time.monotonic() + UNTIL_SECONDS
    while time.monotonic() < deadline and trainer.poll() is None:
        if client.alerts(run=job.run, rule=job.until).alerts:
            return
        time.sleep(0.5)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process (and the group of those that lead one: torchrun's ranks), then
    SIGKILL what is left after 10 s."""
    for proc in reversed(procs):
        if proc.poll() is None:
            _signal(proc, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            proc.wait(10)


def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        if os.getpgid(proc.pid) == proc.pid:  # a group leader (start_new_session)
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
    except ProcessLookupError:
        pass


def _wait_healthy(
    client: Client, proc: subprocess.Popen[bytes], work: Path, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"collector exited early; see {work / 'collector.log'}")
        try:
            client.runs()
            return
        except ClientError:
            time.sleep(0.2)
    sys.exit("collector did not become healthy in time")


def _wait_ended(client: Client, run: str, timeout: float = 10.0) -> None:
    """Until the collector has ingested the run's goodbye (and so judged all its frames)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r.run == run and r.ended for r in client.runs().runs):
            return
        time.sleep(0.2)
