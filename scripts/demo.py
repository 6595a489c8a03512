"""`make demo`: a collector and a demo training run with scripted faults; alerts print as they fire.

The collector listens on tcp://127.0.0.1:5555 and serves http://127.0.0.1:8000. The trainer runs a
small GPT on the shipped corpus and injects a loss spike, a NaN and a learning-rate explosion into
three runs, one after another. When training is done the collector keeps serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
# run name, faults: each run shows one failure the way it happens in real training
SCHEDULE: list[tuple[str, list[str]]] = [
    ("demo-spike", ["spike@60"]),
    ("demo-explode", ["explode@60"]),
    ("demo-nan", ["nan@60"]),
]
STEPS = 90
COLOURS = {"critical": "\033[1;31m", "error": "\033[31m", "warning": "\033[33m", "info": "\033[36m"}


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def _print_alert(alert: dict[str, Any]) -> None:
    colour = COLOURS.get(alert["severity"], "") if sys.stdout.isatty() else ""
    reset = "\033[0m" if colour else ""
    where = f"run={alert['run']} rank={alert['rank']} step={alert['first_step']}"
    if alert.get("parameter"):
        where += f" param={alert['parameter']}"
    print(f"{colour}ALERT {alert['rule']} [{alert['severity']}]{reset} {where}", flush=True)
    print(f"      {alert['message']}", flush=True)
    if alert.get("action"):
        print(f"      what to do: {alert['action']}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, default=8000, help="collector HTTP port")
    parser.add_argument("--zmq-port", type=int, default=5555, help="collector ZeroMQ port")
    parser.add_argument("--exit", action="store_true", help="exit when training is done")
    args = parser.parse_args()

    for port in (args.http_port, args.zmq_port):
        if not _port_free("127.0.0.1", port):
            print(f"port {port} is in use: stop whatever holds it, or pass --http-port/--zmq-port",
                  file=sys.stderr)  # fmt: skip
            return 2
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    endpoint = f"tcp://127.0.0.1:{args.zmq_port}"
    http = f"http://127.0.0.1:{args.http_port}"
    procs: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # even where a parent started us with SIGINT ignored
    log = (WORK / "collector.log").open("wb")
    collector_cmd = [
        sys.executable,
        "-m",
        "gradwatch.collector",
        "--listen",
        endpoint,
        "--http",
        f"127.0.0.1:{args.http_port}",
        "--db",
        str(WORK / "gradwatch.db"),
    ]
    procs.append(subprocess.Popen(collector_cmd, stdout=log, stderr=subprocess.STDOUT))
    seen: set[int] = set()
    try:
        _wait_healthy(http, procs[0])
        print(f"collector up: {http}  (log: {WORK / 'collector.log'})", flush=True)
        for run, faults in SCHEDULE:
            cmd = [
                sys.executable,
                "-m",
                "gradwatch.trainer",
                "--steps",
                str(STEPS),
                "--endpoint",
                endpoint,
                "--run-name",
                run,
                "--size",
                "tiny",
                "--log-every",
                "10",
            ]
            for fault in faults:
                cmd += ["--inject", fault]
            print(f"\n== training {run} with {', '.join(faults)} ==", flush=True)
            trainer = subprocess.Popen(cmd)
            procs.append(trainer)
            while trainer.poll() is None:
                _poll_alerts(http, seen)
                time.sleep(0.3)
            time.sleep(1.0)
            _poll_alerts(http, seen)
        print(
            f"\ntraining done: {len(seen)} alerts. Try:\n  curl localhost:{args.http_port}/alerts"
            f"\n  curl localhost:{args.http_port}/runs\n  curl localhost:{args.http_port}/metrics"
        )
        if args.exit:
            return 0
        print("collector still serving; Ctrl-C stops it.", flush=True)
        while procs[0].poll() is None:
            _poll_alerts(http, seen)
            time.sleep(1.0)
        print("collector exited; see .demo/collector.log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        stop()
        log.close()


def _wait_healthy(http: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"collector exited early; see {WORK / 'collector.log'}")
        try:
            if httpx.get(http + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit("collector did not become healthy in time")


def _poll_alerts(http: str, seen: set[int]) -> None:
    try:
        body = httpx.get(http + "/alerts", params={"limit": 1000}, timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return
    alerts = body["alerts"] if isinstance(body, dict) else body
    for alert in reversed(alerts):  # oldest first
        if alert["id"] not in seen:
            seen.add(alert["id"])
            _print_alert(alert)


if __name__ == "__main__":
    sys.exit(main())
