"""/metrics of a real collector fed by a real demo trainer: the counters, the step-duration
histogram, world size, learning rates by group name, process and build series, and promtool."""

from __future__ import annotations

import re
import shutil
import subprocess

import httpx
import pytest

from tests.helpers.processes import CollectorProcess, run_trainer


def _value(text: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert found, f"no {series} in /metrics"
    return float(found.group(1))


def test_exporter_live_counters_histogram_and_groups_from_a_real_run(
    collector_process: CollectorProcess,
) -> None:
    run = "live-metrics"
    run_trainer(collector_process.listen, run, 7, (), "--size", "tiny", "--every", "3",
                "--batch-size", "4")  # fmt: skip
    collector_process.wait_ended(run)
    text = httpx.get(collector_process.http + "/metrics", timeout=30).text
    who = f'rank="0",run="{run}"'

    # Steps 3 and 6 are sampled; the totals count every step up to the latest sampled one.
    assert _value(text, f"gradwatch_samples_total{{{who}}}") == 6 * 4
    tokens = _value(text, f"gradwatch_tokens_total{{{who}}}")
    assert tokens > 0 and tokens % 24 == 0  # tokens = samples x context length
    assert _value(text, f"gradwatch_step_duration_seconds_count{{{who}}}") == 5  # steps 2-6
    assert _value(text, f'gradwatch_step_duration_seconds_bucket{{le="+Inf",{who}}}') == 5
    assert _value(text, f"gradwatch_step_duration_seconds_sum{{{who}}}") > 0
    assert _value(text, f"gradwatch_optimizer_steps_total{{{who}}}") == 7  # from the bye
    assert _value(text, f'gradwatch_run_world_size{{run="{run}"}}') == 1
    # The demo trainer names its param groups after modules (trainer/optim.py).
    assert _value(text, f'gradwatch_learning_rate{{group="tok_emb",{who}}}') > 0
    assert re.search(r'^gradwatch_run_info\{.*gpu_uuid="".*\} 1\.0$', text, re.M)  # CPU
    assert re.search(r'^gradwatch_build_info\{prometheus_client="[^"]+",python="', text, re.M)
    assert re.search(r"^process_resident_memory_bytes \S+$", text, re.M)
    assert re.search(r'^python_info\{implementation="', text, re.M)

    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed")
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
