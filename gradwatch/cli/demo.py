"""``gradwatch demo`` (``make demo``): a collector and a demo training run with scripted faults;
alerts print as they fire.

The collector listens on tcp://127.0.0.1:5555 and serves http://127.0.0.1:8000. The trainer runs a
small GPT on the shipped corpus and injects a loss spike, a NaN and a learning-rate explosion into
three runs, one after another. When training is done the collector keeps serving until Ctrl-C.
Needs the agent and collector extras (torch included).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from gradwatch.client import Alert, Client, ClientError

# run name, faults: each run shows one failure the way it happens in real training
SCHEDULE: list[tuple[str, list[str]]] = [
    ("demo-spike", ["spike@60"]),
    ("demo-explode", ["explode@60"]),
    ("demo-nan", ["nan@60"]),
]
STEPS = 90
COLOURS = {"critical": "\033[1;31m", "error": "\033[31m", "warning": "\033[33m", "info": "\033[36m"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http-port", type=int, default=8000, help="collector HTTP port")
    p.add_argument("--zmq-port", type=int, default=5555, help="collector ZeroMQ port")
    p.add_argument("--workdir", default=".demo", help="where the database and logs go (wiped)")
    p.add_argument("--exit", action="store_true", help="exit when training is done")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def _print_alert(alert: Alert) -> None:
    colour = COLOURS.get(alert.severity, "") if sys.stdout.isatty() else ""
    reset = "\033[0m" if colour else ""
    where = f"run={alert.run} rank={alert.rank} step={alert.first_step}"
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
    procs.append(subprocess.Popen(collector_cmd, stdout=log, stderr=subprocess.STDOUT))
    seen: set[int] = set()
    client = Client(http)
    try:
        _wait_healthy(client, procs[0], work)
        print(f"collector up: open {http} in a browser (log: {work / 'collector.log'})", flush=True)
        threading.Thread(target=_print_firing, args=(http, seen), daemon=True).start()
        for run, faults in SCHEDULE:
            cmd = [
                sys.executable, "-m", "gradwatch.trainer", "--steps", str(STEPS),
                "--endpoint", endpoint, "--run-name", run, "--size", "tiny", "--log-every", "10",
            ]  # fmt: skip
            for fault in faults:
                cmd += ["--inject", fault]
            print(f"\n== training {run} with {', '.join(faults)} ==", flush=True)
            trainer = subprocess.Popen(cmd)
            procs.append(trainer)
            trainer.wait()
            _wait_ended(client, run)
        port = args.http_port
        url = "" if port == 8000 else f" --url {http}"
        print(
            f"\ntraining done: {len(seen)} alerts. Try:\n  gradwatch alerts{url}"
            f"\n  gradwatch alerts{url} --follow\n  gradwatch runs{url} demo-nan"
            f"\n  curl localhost:{port}/alerts\n  curl localhost:{port}/metrics"
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


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


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
