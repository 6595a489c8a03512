// The page: runs with their ranks, alerts live, and for the chosen run and rank its charts and
// worst parameters. Plain JS modules, no build step; everything it shows comes from the API.

import { followAlerts, getJSON, getToken, HttpError, onUnauthorized, setToken } from "./api.js";
import { Chart, CHARTS, formatNumber } from "./charts.js";

const REFRESH_MS = 2000;
const MAX_ALERTS = 500;
const RANK_CELLS = 64; // runs with more ranks show them as ranges of numbers

const $ = (id) => document.getElementById(id);

function node(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "class") el.className = value;
    else el[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) el.append(child);
  }
  return el;
}

const state = {
  runs: [],
  alerts: new Map(),
  run: null,
  rank: null,
  detail: null,
  charts: [],
  loaded: false,
  timer: null,
};

// ---------------------------------------------------------------- ranks, compactly

/** [0,1,2,3,7,9,10] → "0-3,7,9-10"; at most `max` ranges, then "+N more". */
function compactRanks(ranks, max = 8) {
  const sorted = [...new Set(ranks)].sort((a, b) => a - b);
  const runs = [];
  for (const r of sorted) {
    const last = runs[runs.length - 1];
    if (last && r === last[1] + 1) last[1] = r;
    else runs.push([r, r]);
  }
  const shown = runs.slice(0, max).map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(",");
  const hidden = runs.slice(max).reduce((n, [a, b]) => n + b - a + 1, 0);
  return shown + (hidden ? ` +${hidden} more` : "");
}

function rankState(r) {
  if (r.firing > 0) return "firing";
  if (r.ended) return "ended";
  return r.live ? "live" : "stored";
}

function runState(run) {
  if (run.ended) return "ended";
  return run.ranks.some((r) => r.live) ? "running" : "not in memory";
}

// ---------------------------------------------------------------- runs

function renderRuns() {
  const list = $("runs");
  list.replaceChildren(
    ...state.runs.map((run) => {
      const steps = Math.max(...run.ranks.map((r) => r.last_step));
      const item = node(
        "li",
        { class: run.run === state.run ? "run selected" : "run", dataset: { run: run.run, state: runState(run) } },
        node(
          "div",
          { class: "run-head" },
          node("a", { class: "run-name", href: "#" + new URLSearchParams({ run: run.run }), textContent: run.run }),
          run.firing ? node("span", { class: "badge firing", textContent: `${run.firing} firing` }) : null,
        ),
        node("div", { class: "muted", textContent: `${runState(run)} · ${run.ranks.length} rank${run.ranks.length === 1 ? "" : "s"} · step ${steps}` }),
        renderRanks(run),
      );
      return item;
    }),
  );
}

function renderRanks(run) {
  if (run.ranks.length <= RANK_CELLS) {
    return node(
      "div",
      { class: "ranks" },
      ...run.ranks.map((r) =>
        node("a", {
          class: "rank-cell " + rankState(r),
          href: "#" + new URLSearchParams({ run: run.run, rank: r.rank }),
          title: `rank ${r.rank} on ${r.host}: step ${r.last_step}, ${rankState(r)}${r.firing ? ` (${r.firing} firing)` : ""}`,
          textContent: String(r.rank),
        }),
      ),
    );
  }
  const groups = ["firing", "live", "ended", "stored"].map((s) => [s, run.ranks.filter((r) => rankState(r) === s).map((r) => r.rank)]);
  return node(
    "div",
    { class: "ranks compact" },
    ...groups
      .filter(([, ranks]) => ranks.length)
      .map(([s, ranks]) => node("div", { class: "rank-group " + s, textContent: `${s} (${ranks.length}): ${compactRanks(ranks)}` })),
  );
}

function chooseRun() {
  const wanted = new URLSearchParams(location.hash.slice(1));
  const names = state.runs.map((r) => r.run);
  const fromHash = wanted.get("run");
  let run = fromHash && names.includes(fromHash) ? fromHash : state.run;
  if (!names.includes(run)) {
    const live = state.runs.filter((r) => r.ranks.some((k) => k.live));
    const pick = live.find((r) => r.firing > 0) || live[0] || state.runs[0];
    run = pick ? pick.run : null;
  }
  const hashRank = wanted.has("rank") ? Number(wanted.get("rank")) : null;
  if (run !== state.run) {
    state.run = run;
    state.rank = null;
    state.detail = null;
  }
  if (fromHash === run && hashRank !== null && Number.isInteger(hashRank)) state.rank = hashRank;
}

// ---------------------------------------------------------------- alerts

function upsertAlert(alert) {
  const old = state.alerts.get(alert.id);
  if (old && old.seq > alert.seq) return;
  state.alerts.set(alert.id, alert);
  if (state.alerts.size > MAX_ALERTS) {
    const oldest = [...state.alerts.keys()].sort((a, b) => a - b).slice(0, state.alerts.size - MAX_ALERTS);
    oldest.forEach((id) => state.alerts.delete(id));
  }
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

function renderAlerts() {
  const alerts = [...state.alerts.values()].sort((a, b) => b.id - a.id);
  const body = $("alerts").tBodies[0];
  body.replaceChildren(
    ...alerts.map((a) =>
      node(
        "tr",
        {
          class: `alert ${a.state} ${a.severity}`,
          dataset: { alertId: a.id, rule: a.rule, state: a.state, run: a.run, rank: a.rank },
        },
        node("td", { textContent: a.id }),
        node("td", {}, node("span", { class: "sev " + a.severity, textContent: a.severity })),
        node("td", { textContent: a.state + (a.acked ? " · acked" : "") }),
        node("td", {}, node("a", { href: `/docs/rules.md#${encodeURIComponent(a.rule)}`, textContent: a.rule, target: "_blank" })),
        node("td", {}, a.run ? node("a", { href: "#" + new URLSearchParams({ run: a.run, rank: a.rank }), textContent: a.run }) : "(the collector)"),
        node("td", { textContent: a.rank >= 0 ? a.rank : "–" }),
        node("td", { textContent: a.first_step === a.step ? a.step : `${a.first_step}–${a.step}` }),
        node("td", { class: "message", title: a.action ? `${a.message}\n\nwhat to do: ${a.action}` : a.message }, node("div", { textContent: a.message })),
        node("td", { class: "muted", textContent: clock(a.updated_at) }),
      ),
    ),
  );
  const firing = alerts.filter((a) => a.state === "firing").length;
  $("alert-count").textContent = alerts.length ? `${firing} firing, ${alerts.length} shown` : "";
  $("no-alerts").hidden = alerts.length > 0;
  $("alerts").hidden = alerts.length === 0;
}

async function loadAlerts() {
  const page = await getJSON("/alerts?limit=" + MAX_ALERTS);
  page.alerts.forEach(upsertAlert);
  renderAlerts();
  redrawCharts();
}

// ---------------------------------------------------------------- the chosen run

function markers() {
  return [...state.alerts.values()]
    .filter((a) => a.run === state.run && a.rank === state.rank && a.first_step >= 0)
    .map((a) => ({ step: a.first_step, severity: a.severity, label: a.rule }));
}

function redrawCharts() {
  const m = markers();
  state.charts.forEach((chart) => chart.setMarkers(m));
}

function renderRankSelect(detail) {
  const select = $("rank-select");
  const summary = state.runs.find((r) => r.run === state.run);
  const firing = new Map((summary ? summary.ranks : []).map((r) => [r.rank, r.firing]));
  const wanted = detail.ranks.map((r) => String(r.rank)).join(",");
  if (select.dataset.ranks !== wanted) {
    select.replaceChildren(...detail.ranks.map((r) => node("option", { value: r.rank, textContent: `${r.rank}` })));
    select.dataset.ranks = wanted;
  }
  for (const option of select.options) {
    const n = firing.get(Number(option.value)) || 0;
    option.textContent = n ? `${option.value} (${n} firing)` : option.value;
  }
  select.value = String(state.rank);
}

function paramList(title, all, unit) {
  const items = all.slice(0, 8);
  const more = all.length - items.length;
  const rows = items.length
    ? items.map((p) => node("li", {}, node("code", { textContent: p.name !== undefined ? p.name : p }), p.value !== undefined ? ` ${formatNumber(p.value, unit)}` : ""))
    : [node("li", { class: "muted", textContent: "none" })];
  if (more > 0) rows.push(node("li", { class: "muted", textContent: `+${more} more` }));
  return node("div", { class: "param-list" }, node("h4", { textContent: title }), node("ul", {}, ...rows));
}

function renderWorst(rank) {
  const w = rank.worst;
  $("worst").replaceChildren(
    paramList("largest gradient norm", w.by_grad_norm),
    paramList("smallest update ratio", w.lowest_update_ratio),
    paramList("NaN/Inf gradient or weight", w.non_finite),
    paramList("frozen by design", w.frozen_by_design),
  );
  const full = rank.full_step >= 0 ? `update ratios from step ${rank.full_step}` : "no update ratios yet";
  $("worst-meta").textContent = `rank ${rank.rank} at step ${rank.step} · ${full}`;
}

async function refreshRun() {
  const summary = state.runs.find((r) => r.run === state.run);
  const panel = $("run-panel");
  if (!summary || !summary.ranks.some((r) => r.live)) {
    panel.hidden = !summary;
    if (summary) {
      $("run-title").textContent = summary.run;
      $("run-meta").textContent = "not in the collector's memory (finished long ago, or before a restart): no charts";
      state.charts.forEach((c) => c.destroy());
      state.charts = [];
      $("worst").replaceChildren();
    }
    return;
  }
  const detail = await getJSON(`/runs/${encodeURIComponent(state.run)}`);
  if (!detail.ranks.length) return;
  if (state.rank === null || !detail.ranks.some((r) => r.rank === state.rank)) {
    const firing = summary.ranks.find((r) => r.firing > 0 && detail.ranks.some((d) => d.rank === r.rank));
    state.rank = firing ? firing.rank : detail.ranks[0].rank;
  }
  const rank = detail.ranks.find((r) => r.rank === state.rank);
  const params = new URLSearchParams({ rank: state.rank });
  CHARTS.forEach((c) => c.metrics.forEach((m) => params.append("metric", m)));
  let history = { metrics: {} };
  try {
    history = await getJSON(`/runs/${encodeURIComponent(state.run)}/series?${params}`);
  } catch (err) {
    if (!(err instanceof HttpError && err.status === 404)) throw err; // the rank left meanwhile
  }
  state.detail = detail;
  panel.hidden = false;
  $("run-title").textContent = detail.run;
  $("run-meta").textContent = `${detail.ended ? "ended" : "running"} · ${detail.ranks.length} live rank(s) · ${rank.optimizer} on ${rank.device}, ${rank.host} · loss ${formatNumber(rank.loss)}`;
  renderRankSelect(detail);
  if (!state.charts.length) state.charts = CHARTS.map((spec) => new Chart($("charts"), spec));
  const m = markers();
  state.charts.forEach((chart) => chart.update(history.metrics, m));
  renderWorst(rank);
}

// ---------------------------------------------------------------- refresh loop

function setBanner(text) {
  $("banner").hidden = !text;
  $("banner").textContent = text || "";
}

let refreshing = false;
let again = false;

async function refresh() {
  if (refreshing) {
    again = true; // one more pass once this one is done
    return;
  }
  refreshing = true;
  clearTimeout(state.timer);
  try {
    const body = await getJSON("/runs?limit=200");
    state.runs = body.runs;
    chooseRun();
    renderRuns();
    await refreshRun();
    setBanner(null);
  } catch (err) {
    if (!(err instanceof HttpError && err.status === 401)) setBanner(`Cannot read from the collector: ${err.message}`);
  } finally {
    state.loaded = true;
    const empty = state.runs.length === 0 && state.alerts.size === 0;
    $("empty").hidden = !empty;
    $("alerts-panel").hidden = empty;
    document.body.dataset.ready = "1";
    refreshing = false;
    if (again) {
      again = false;
      refresh();
    } else {
      schedule();
    }
  }
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(() => (document.hidden ? schedule() : refresh()), REFRESH_MS);
}

// ---------------------------------------------------------------- token

function showTokenForm(note) {
  $("token-form").hidden = false;
  if (note) $("token-note").textContent = note;
  $("token-input").focus();
}

function setupToken() {
  onUnauthorized(() => showTokenForm("The collector needs an API token to read. Paste it here; it stays in this browser."));
  $("token-button").addEventListener("click", () => {
    $("token-form").hidden = !$("token-form").hidden;
    $("token-input").value = getToken();
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("token-input").value.trim());
    $("token-form").hidden = true;
    refresh();
  });
  $("token-forget").addEventListener("click", () => {
    setToken("");
    $("token-input").value = "";
  });
}

// ---------------------------------------------------------------- start

function start() {
  setupToken();
  window.addEventListener("hashchange", () => {
    chooseRun();
    renderRuns();
    refresh();
  });
  $("rank-select").addEventListener("change", (event) => {
    location.hash = "#" + new URLSearchParams({ run: state.run, rank: event.target.value });
  });
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => state.charts.forEach((c) => c.resize()), 150);
  });
  const conn = $("conn");
  followAlerts({
    onOpen: loadAlerts,
    onAlert: (alert) => {
      upsertAlert(alert);
      renderAlerts();
      redrawCharts();
      if (alert.run && !state.runs.some((r) => r.run === alert.run)) refresh();
    },
    onState: (s) => {
      conn.dataset.state = s;
      conn.textContent = { live: "live", down: "reconnecting…", token: "needs a token" }[s] || s;
    },
  });
  refresh();
}

start();
