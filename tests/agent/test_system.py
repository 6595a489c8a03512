"""System metrics: throughput and MFU from one step's numbers, memory read from /proc."""

from __future__ import annotations

import os

import pytest
import torch

from gradwatch.agent.system import memory_metrics, throughput_metrics


def test_system_throughput_and_mfu_follow_from_step_time_tokens_and_flops() -> None:
    got = throughput_metrics(0.5, 1000.0, 10.0, flops_per_token=6e6, peak_flops=1e12)
    assert got == pytest.approx(
        {
            "step_time_seconds": 0.5,
            "tokens_per_second": 2000.0,
            "samples_per_second": 20.0,
            "mfu_ratio": 2000.0 * 6e6 / 1e12,
        }
    )
    assert "mfu_ratio" not in throughput_metrics(0.5, 1000.0, None, None, 1e12)
    assert throughput_metrics(None, 1000.0, 10.0, 6e6, 1e12) == {}  # first step: no interval


def test_system_cpu_memory_is_the_resident_set_and_physical_ram() -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    got = memory_metrics(torch.device("cpu"))
    with open("/proc/self/statm") as fh:
        rss = int(fh.read().split()[1]) * page
    assert got["rss_bytes"] == pytest.approx(rss, rel=0.05)
    assert got["memory_total_bytes"] == page * os.sysconf("SC_PHYS_PAGES")
    grown = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB touched: the re-read sees it
    assert memory_metrics(torch.device("cpu"))["rss_bytes"] >= got["rss_bytes"] + (48 << 20)
    del grown
