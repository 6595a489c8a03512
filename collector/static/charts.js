// One chart per metric (uPlot, vendored): the rank's history with alert markers at their steps
// and a red tick wherever the value was NaN or Inf.

/* global uPlot */

export const SEVERITY_COLOURS = { critical: "#c62828", error: "#e65100", warning: "#b58900", info: "#1565c0" };

export function formatNumber(value, unit) {
  if (value === null || value === undefined || Number.isNaN(value)) return "NaN";
  if (!Number.isFinite(value)) return value > 0 ? "Inf" : "-Inf";
  if (unit === "bytes") {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = Math.abs(value);
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return `${(Math.sign(value) * v).toPrecision(3)} ${units[i]}`;
  }
  const a = Math.abs(value);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return value.toExponential(2).replace(/\.?0+e/, "e");
  return String(Number(value.toPrecision(4)));
}

/** What each chart shows: the first metric of `metrics` the rank has is drawn. */
export const CHARTS = [
  { id: "loss", title: "Loss", metrics: ["loss"] },
  { id: "grad_norm", title: "Gradient norm", metrics: ["grad_norm"], log: true },
  { id: "lr", title: "Learning rate", metrics: ["lr"], log: true },
  { id: "throughput", title: "Throughput", metrics: ["tokens_per_second", "samples_per_second"] },
  { id: "memory", title: "Memory", metrics: ["memory_allocated_bytes", "rss_bytes"], unit: "bytes" },
  { id: "step_time", title: "Step time", metrics: ["step_time_seconds"], unit: "s" },
];

export const LABELS = {
  tokens_per_second: "tokens/s",
  samples_per_second: "samples/s",
  memory_allocated_bytes: "allocated",
  rss_bytes: "resident (RSS)",
  step_time_seconds: "seconds",
};

// Steps are whole numbers: ticks at 1, 2, 5, 10, 20, 50, ... apart.
const STEP_INCREMENTS = [];
for (let e = 0; e < 12; e++) [1, 2, 5].forEach((m) => STEP_INCREMENTS.push(m * 10 ** e));

const powersOfTen = (u, splits) =>
  splits.map((v) => (v > 0 && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9 ? v : null));

function drawMarkers(u, chart) {
  const { ctx, bbox } = u;
  const dpr = window.devicePixelRatio || 1;
  ctx.save();
  ctx.font = `${10 * dpr}px system-ui, sans-serif`;
  ctx.lineWidth = dpr;
  const xs = u.data[0];
  ctx.fillStyle = SEVERITY_COLOURS.critical;
  for (let i = 0; i < xs.length; i++) {
    if (chart.bad[i]) {
      const x = u.valToPos(xs[i], "x", true);
      ctx.fillRect(x - dpr, bbox.top + bbox.height - 6 * dpr, 2 * dpr, 6 * dpr);
    }
  }
  const rows = []; // right end of the last label in each row: labels of close markers stack
  const sorted = [...chart.markers].sort((a, b) => a.step - b.step);
  for (const marker of sorted) {
    const x = Math.round(u.valToPos(marker.step, "x", true));
    if (!(x >= bbox.left && x <= bbox.left + bbox.width)) continue;
    ctx.strokeStyle = ctx.fillStyle = SEVERITY_COLOURS[marker.severity] || "#555";
    ctx.setLineDash([4 * dpr, 3 * dpr]);
    ctx.beginPath();
    ctx.moveTo(x, bbox.top);
    ctx.lineTo(x, bbox.top + bbox.height);
    ctx.stroke();
    const width = ctx.measureText(marker.label).width;
    const left = x + width + 3 * dpr > bbox.left + bbox.width ? x - width - 3 * dpr : x + 3 * dpr;
    let row = rows.findIndex((end) => end < left);
    if (row < 0 && rows.length < 4) row = rows.push(0) - 1;
    if (row < 0) continue; // too crowded: the line alone
    rows[row] = left + width + 4 * dpr;
    ctx.fillText(marker.label, left, bbox.top + (10 + 11 * row) * dpr);
  }
  ctx.restore();
}

/** A chart in `host`: update(history.metrics, markers) draws the newest data. */
export class Chart {
  constructor(host, spec) {
    this.spec = spec;
    this.markers = [];
    this.bad = [];
    this.plot = null;
    this.box = document.createElement("div");
    this.box.className = "chart";
    this.box.dataset.chart = spec.id;
    this.head = document.createElement("div");
    this.head.className = "chart-head";
    this.canvasHost = document.createElement("div");
    this.canvasHost.className = "chart-body";
    this.box.append(this.head, this.canvasHost);
    host.append(this.box);
  }

  width() {
    return Math.max(200, this.box.clientWidth - 2);
  }

  update(metrics, markers) {
    const spec = this.spec;
    const name = spec.metrics.find((m) => metrics[m] && metrics[m].steps.length);
    this.setMarkers(markers);
    this.box.dataset.metric = name || "";
    if (!name) {
      this.box.dataset.points = "0";
      this.head.textContent = `${spec.title}: no data`;
      if (this.plot) {
        this.plot.destroy();
        this.plot = null;
      }
      this.box.classList.add("empty");
      return;
    }
    this.box.classList.remove("empty");
    const series = metrics[name];
    const xs = series.steps;
    const raw = series.values;
    this.bad = raw.map((v) => v === null);
    const ys = spec.log ? raw.map((v) => (v !== null && v > 0 ? v : null)) : raw;
    const label = LABELS[name] ? ` (${LABELS[name]})` : "";
    const every = series.samples_per_bucket > 1 ? ` · 1 point per ${series.samples_per_bucket} steps, min/max kept` : "";
    this.head.textContent = `${spec.title}${label}: ${formatNumber(series.last_value, spec.unit)} at step ${series.last_step}${every}`;
    this.box.dataset.points = String(xs.length);
    if (this.plot && this.plot.seriesName === name) {
      this.plot.setData([xs, ys]);
      return;
    }
    if (this.plot) this.plot.destroy();
    this.plot = new uPlot(this.options(name), [xs, ys], this.canvasHost);
    this.plot.seriesName = name;
  }

  options(name) {
    const spec = this.spec;
    const unit = spec.unit;
    return {
      width: this.width(),
      height: 170,
      legend: { show: true, live: true, markers: { show: false } }, // values under the cursor
      cursor: { drag: { x: false, y: false } }, // no zoom: the data refreshes every few seconds
      scales: { x: { time: false }, y: spec.log ? { distr: 3, log: 10 } : {} },
      series: [
        { label: "step", value: (u, v) => (v === null || v === undefined ? "–" : String(v)) },
        {
          label: LABELS[name] || spec.title,
          stroke: "#2563eb",
          width: 1.5,
          spanGaps: false,
          value: (u, v) => (v === null || v === undefined ? "–" : formatNumber(v, unit)),
        },
      ],
      axes: [
        { size: 30, incrs: STEP_INCREMENTS },
        {
          size: 64,
          values: (u, values) => values.map((v) => (v === null ? "" : formatNumber(v, unit))),
          // log scales: labels, ticks and grid lines at powers of ten only
          filter: spec.log ? powersOfTen : undefined,
          grid: spec.log ? { filter: powersOfTen } : {},
          ticks: spec.log ? { filter: powersOfTen } : {},
        },
      ],
      hooks: { draw: [(u) => drawMarkers(u, this)] },
    };
  }

  setMarkers(markers) {
    this.markers = markers;
    this.box.dataset.markers = markers.map((m) => `${m.label}@${m.step}`).join(" ");
    if (this.plot) this.plot.redraw(false, false);
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: this.width(), height: 170 });
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.box.remove();
  }
}
