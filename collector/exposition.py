"""One scrape's samples, in two sinks with the same interface: client_python families (the
registry API: ``generate_latest``, promtool), or the Prometheus text format (0.0.4) written
directly as samples arrive.

A scrape of 5,000 runs is ~90,000 series; client_python spends ~14 µs on each, the text sink
about 1 (see BENCHMARKS.md). Both sinks get the same calls from the exporter, and a test holds
the text sink's bytes equal to ``generate_latest`` of the families.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

Buckets = Sequence[tuple[str, float]]
"""Cumulative histogram buckets: ``(le, count)`` pairs, the last one ``+Inf``."""
RANK_LABELS = ("run", "rank")
"""The first labels of every per-rank family."""


@dataclass(frozen=True)
class MetricSpec:
    """One exported family: its scraped name, type, labels and help text."""

    name: str
    type: Literal["gauge", "counter", "histogram", "info"]
    labels: tuple[str, ...]
    help: str

    def family(self) -> Metric:
        """An empty client_python family of this type."""
        if self.type == "counter":
            return CounterMetricFamily(self.name, self.help, labels=self.labels)
        if self.type == "info":
            return InfoMetricFamily(self.name.removesuffix("_info"), self.help, labels=self.labels)
        if self.type == "histogram":
            return HistogramMetricFamily(self.name, self.help, labels=self.labels)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)


@dataclass(frozen=True)
class Rank:
    """The (run, rank) labels of one rank, escaped once per scrape for the text sink."""

    run: str
    rank: str
    values: tuple[str, str] = field(init=False)
    text: str = field(init=False)
    """``rank="0",run="..."`` (sorted, escaped)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", (self.run, self.rank))
        object.__setattr__(self, "text", f'rank="{_escape(self.rank)}",run="{_escape(self.run)}"')


class Samples:
    """The structured sink: samples by family, turned into client_python families."""

    def __init__(self, specs: Sequence[MetricSpec]) -> None:
        self.specs = {s.name: s for s in specs}
        self.rows: dict[str, list[tuple[Sequence[str], float]]] = {s.name: [] for s in specs}
        self.histograms: dict[str, tuple[list[tuple[str, int]], float]] = {}
        self.rank_histograms: dict[str, list[tuple[Sequence[str], Buckets, float]]] = {}

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        """A sample of family ``name``; ``labels`` in the spec's order (info labels included)."""
        self.rows[name].append((labels, value))

    def rank(self, name: str, who: Rank, value: float, extra: str | None = None) -> None:
        """A sample of a per-rank family: labels ``(run, rank)``, plus ``extra`` as the third
        when the family has one."""
        self.add(name, who.values if extra is None else (*who.values, extra), value)

    def histogram(self, name: str, buckets: list[tuple[str, int]], total: float) -> None:
        """The one (label-less) sample set of histogram ``name``: cumulative buckets, sum."""
        self.histograms[name] = (buckets, total)

    def rank_histogram(self, name: str, who: Rank, buckets: Buckets, total: float) -> None:
        """One rank's sample set of histogram ``name`` (labels ``run``, ``rank``): cumulative
        ``(le, count)`` buckets ending with ``+Inf``, and the sum."""
        self.rank_histograms.setdefault(name, []).append((who.values, buckets, total))

    def families(self) -> list[Metric]:
        out: list[Metric] = []
        for name, spec in self.specs.items():
            if name in self.histograms:
                buckets, total = self.histograms[name]
                out.append(HistogramMetricFamily(name, spec.help, buckets=buckets, sum_value=total))
                continue
            fam = spec.family()
            if isinstance(fam, HistogramMetricFamily):
                for labels, cumulative, sum_value in self.rank_histograms.get(name, ()):
                    fam.add_metric(list(labels), list(cumulative), sum_value)
            for labels, value in self.rows[name]:
                fam.add_sample(name, dict(zip(spec.labels, labels, strict=True)), float(value))
            out.append(fam)
        return out


class TextSamples(Samples):
    """The text sink: every sample is written as its line when it is added."""

    def __init__(self, specs: Sequence[MetricSpec]) -> None:
        super().__init__(specs)
        self.lines: dict[str, list[str]] = {s.name: [] for s in specs}
        self._escaped: dict[str, str] = {}
        self._extra: dict[str, tuple[str, bool]] = {}
        """Per-rank families with one more label: its name, and whether it sorts first."""
        for s in specs:
            if len(s.labels) == 3 and s.labels[:2] == RANK_LABELS:
                first = s.labels[2] < "rank"
                if first or s.labels[2] > "run":  # rank and run stay adjacent when sorted
                    self._extra[s.name] = (s.labels[2], first)

    def _esc(self, value: str) -> str:
        got = self._escaped.get(value)
        if got is None:
            got = self._escaped[value] = _escape(value)
        return got

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        names = self.specs[name].labels
        if not labels:
            self.lines[name].append(f"{name} {go_float(value)}\n")
            return
        pairs = sorted(zip(names, labels, strict=True))
        inner = ",".join(f'{k}="{self._esc(v)}"' for k, v in pairs)
        self.lines[name].append(f"{name}{{{inner}}} {go_float(value)}\n")

    def rank(self, name: str, who: Rank, value: float, extra: str | None = None) -> None:
        if extra is None:
            self.lines[name].append(f"{name}{{{who.text}}} {go_float(value)}\n")
            return
        known = self._extra.get(name)
        if known is None:
            self.add(name, (*who.values, extra), value)
            return
        key, first = known
        pair = f'{key}="{self._esc(extra)}"'
        inner = f"{pair},{who.text}" if first else f"{who.text},{pair}"
        self.lines[name].append(f"{name}{{{inner}}} {go_float(value)}\n")

    def rank_histogram(self, name: str, who: Rank, buckets: Buckets, total: float) -> None:
        lines = self.lines[name]
        lines.extend(f'{name}_bucket{{le="{le}",{who.text}}} {go_float(n)}\n' for le, n in buckets)
        lines.append(f"{name}_count{{{who.text}}} {go_float(buckets[-1][1])}\n")
        lines.append(f"{name}_sum{{{who.text}}} {go_float(total)}\n")

    def text(self) -> bytes:
        """The text exposition: what ``generate_latest`` makes of the same samples."""
        out: list[str] = []
        for name, spec in self.specs.items():
            doc = spec.help.replace("\\", r"\\").replace("\n", r"\n")
            kind = {"info": "gauge"}.get(spec.type, spec.type)
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            if name in self.histograms:
                buckets, total = self.histograms[name]
                out.extend(f'{name}_bucket{{le="{le}"}} {go_float(n)}\n' for le, n in buckets)
                out.append(f"{name}_count {go_float(buckets[-1][1])}\n")
                out.append(f"{name}_sum {go_float(total)}\n")
            out.extend(self.lines[name])
        return "".join(out).encode()


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def go_float(value: float) -> str:
    """A sample value as Prometheus (Go) writes it: client_python's ``floatToGoString``."""
    d = float(value)
    if -1e300 < d < 1e6:  # the common case: Python's repr is Go's (no exponent switch, finite)
        return repr(d)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s
