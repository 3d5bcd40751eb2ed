// sweep dashboard: a read-only view of a study database that follows a
// running sweep (it polls /api/token and redraws when the database moved). Every text from the database is put into the page with
// textContent (el() below), never parsed as HTML.
"use strict";

const dashboard = { charts: {}, renders: 0, view: "", token: "", drawn: new Set() };
window.dashboard = dashboard;

// el builds an element; string children become text nodes.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.addEventListener("click", v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// Values the server sends as strings because JSON has no such numbers.
const nonFinite = { "Infinity": "+∞", "-Infinity": "−∞", "NaN": "NaN" };

// plottable is v where a chart can draw it, else null (a gap).
function plottable(v) { return typeof v === "number" ? v : null; }

const fmt = {
  num(v, d = 2) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "number") return v.toFixed(d);
    return nonFinite[v] || String(v);
  },
  lr(v) { return v === null || v === undefined ? "—" : Number(v).toExponential(2); },
  dur(s) {
    if (s === null || s === undefined) return "—";
    s = Math.round(s);
    if (s < 90) return s + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  },
  param(v) { return typeof v === "number" ? (Math.abs(v) < 1e-2 && v !== 0 ? v.toExponential(3) : String(+v.toFixed(6))) : String(v); },
};

async function api(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

// Trial numbers and epochs are whole: ticks at 1, 2, 5, 10, ...
const wholeSteps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

// chart draws one uPlot chart into target. Redrawing the same view (a
// poll saw the database move) keeps the chart itself and gives it the new
// data without resetting its scales: a zoom, and the cursor, survive.
// opts.onPick, when set, is called with the index of a point clicked;
// opts.info, when set, is kept as the chart's info for the formatters
// (they outlive the render that made them, so they read it from there).
function chart(name, title, opts, data, target) {
  const box = el("div", { class: "chart", "data-chart": name }, el("h3", {}, title));
  target.append(box);
  dashboard.drawn.add(name);
  const old = dashboard.charts[name];
  if (old && dashboard.chartsView === dashboard.rendering && old.series.length === data.length && old.key === opts.key) {
    box.append(old.root);
    if (old.tip) box.append(old.tip);
    old.info = opts.info;
    old.pick = opts.onPick;
    old.hover = opts.hover;
    // A chart the user zoomed into keeps its zoom; any other follows its
    // data, new points outside the old range included.
    old.setData(data, !(old.userZoom || zoomedIn(old)));
    return old;
  }
  if (old) old.destroy();
  // Every x axis here counts (trials, epochs, steps, learning rates): uPlot's
  // default reads x as Unix time and labels it with dates of 1970.
  opts = Object.assign({}, opts, { scales: Object.assign({}, opts.scales, { x: Object.assign({ time: false }, (opts.scales || {}).x) }) });
  // uPlot swallows a click whose press and release it saw at different
  // places (a zoom's drag), and the focus on the nearest line moves them:
  // the click handler below tells a drag from a click itself.
  opts.cursor = Object.assign({}, opts.cursor, { drag: { x: true, y: false, setScale: true, click: () => {} } });
  // A chart of many lines names the one nearest the cursor (uPlot's focus)
  // in a line under it, instead of a legend of every line.
  // New points may sit before the hovered one (a slice plot is sorted by
  // the parameter): once new data is in, find what is under the cursor
  // again, so that the hover text and a click name the same trial.
  const refind = u => { if (u.cursor.left >= 0) u.setCursor({ left: u.cursor.left, top: u.cursor.top }); };
  // A drag that zooms marks the chart zoomed until a double click.
  const zoom = u => { if (u.select.width > 0) u.userZoom = true; };
  opts = Object.assign({}, opts, { hooks: Object.assign({}, opts.hooks, { setData: [refind], setSelect: [zoom] }) });
  let tip = null;
  if (opts.hover) {
    const hint = opts.hint || "hover a point to see its trial; a click opens it";
    tip = el("div", { class: "hover" }, hint);
    const show = u => {
      const text = u.hover(u, u.focused, u.cursor.idx);
      u.tip.textContent = text || hint;
      u.tip.classList.toggle("muted", !text);
    };
    opts = Object.assign({ focus: { alpha: 0.35 } }, opts, { cursor: Object.assign({ focus: { prox: 24 } }, opts.cursor),
      hooks: Object.assign({}, opts.hooks, { setCursor: [show], setSeries: [(u, i) => { u.focused = i; show(u); }] }) });
  }
  const u = new uPlot(Object.assign({ width: 520, height: 260, legend: { show: !!opts.onPick && !opts.hover, live: true } }, opts), data, box);
  u.pick = opts.onPick;
  u.info = opts.info;
  u.hover = opts.hover;
  u.focused = null;
  u.tip = tip;
  if (tip) box.append(tip);
  u.key = opts.key; // what the chart's options were made from: another key makes a new chart
  // A click on the chart (not the end of a drag that zooms) opens the point
  // under the cursor (on the line nearest it, where there are several).
  let down = null;
  u.over.addEventListener("mousedown", e => { down = [e.clientX, e.clientY]; });
  u.over.addEventListener("dblclick", () => { u.userZoom = false; });
  u.over.addEventListener("click", e => {
    const moved = down && Math.hypot(e.clientX - down[0], e.clientY - down[1]) > 3;
    if (moved || !u.pick) return;
    u.setCursor({ left: u.cursor.left, top: u.cursor.top }); // the point under it now, should data have come since
    if (u.cursor.idx !== null && u.cursor.idx !== undefined) u.pick(u.cursor.idx, u.focused);
  });
  dashboard.charts[name] = u;
  return u;
}

// paramText is a trial's parameters for a hover line: "lr 1.00e-4, rank 8".
const paramText = params => Object.entries(params).map(([k, v]) => k + " " + (k === "lr" && typeof v === "number" ? fmt.lr(v) : fmt.param(v))).join(", ");

// zoomedIn reports whether u's x scale shows less than its data's range:
// the user dragged a zoom (a double click gives the whole range back).
function zoomedIn(u) {
  const xs = u.data[0].filter(v => v !== null && Number.isFinite(v));
  if (!xs.length || u.scales.x.min === null || u.scales.x.min === undefined) return false;
  return u.scales.x.min > Math.min(...xs) || u.scales.x.max < Math.max(...xs);
}

// pointText is "epoch 3: 0.8123" for series s at index i, or "" off the data.
function pointText(u, s, i, unit) {
  if (s === null || s === undefined || i === null || i === undefined || u.data[s] === undefined) return "";
  const v = u.data[s][i];
  return v === null || v === undefined ? "" : unit + " " + u.data[0][i] + ": " + fmt.num(v, 4);
}

function table(headers, rows, opts = {}) {
  const thead = el("tr", {}, headers.map((h, i) => el("th", { class: (opts.num || []).includes(i) ? "num" : "" }, h)));
  return el("table", {}, el("thead", {}, thead), el("tbody", {}, rows));
}

function cell(v, num) { return el("td", { class: num ? "num" : "" }, v); }

// nameCell holds a name that may be long: cut with an ellipsis, whole in
// its tooltip, so that it never pushes the numbers off the screen.
function nameCell(v, href) { return el("td", { class: "name", title: v }, href ? el("a", { href }, v) : v); }

// Pages have addresses: a link opens one in a new tab or copies it.
const studyHref = name => "#/study/" + encodeURIComponent(name);
const trialHref = (study, n) => "#/trial/" + encodeURIComponent(study) + "/" + n;

// rowClick opens href from a click anywhere on a row, except on a link,
// which does it itself (a middle or ctrl click: a new tab, not this one).
const rowClick = href => e => { if (!e.target.closest("a")) go(href); };

// reason is a failure's reason beside its count or state.
function reason(r) { return r ? el("span", { class: "reason", title: r }, r) : null; }

// ---- views ---------------------------------------------------------------

async function overview(view) {
  const o = await api("/api/overview");
  const t = o.totals;
  const done = t.complete + t.pruned;
  view.append(el("h1", {}, "Overview"));
  const cards = el("div", { class: "cards" },
    el("div", { class: "card" }, el("b", {}, String(o.studies.length)), "studies"),
    el("div", { class: "card" }, el("b", { class: "state-COMPLETE" }, String(t.complete)), "complete"),
    el("div", { class: "card" }, el("b", { class: "state-RUNNING" }, String(t.running)), "running"),
    el("div", { class: "card" }, el("b", { class: "state-FAIL" }, String(t.fail)), "failed"),
    el("div", { class: "card" }, el("b", { class: "state-PRUNED" }, String(t.pruned)), "pruned"),
    el("div", { class: "card" }, el("b", {}, t.budget ? Math.round(100 * done / t.budget) + " %" : "—"),
      t.budget ? done + " of " + t.budget + " trials" : "no budget (pass --config)"),
    el("div", { class: "card" }, el("b", {}, fmt.dur(t.seconds)), "trial time so far"),
    el("div", { class: "card" }, el("b", {}, t.running ? fmt.dur(t.eta_seconds) : "—"),
      t.running ? "remaining (≈, parallel " + o.parallel + ")" : "nothing running"));
  view.append(cards);
  // A filter of the studies by name, and groups that fold: a sweep of the
  // paper's grid has 833 studies.
  const filter = el("input", { id: "study-filter", type: "search", placeholder: "filter studies (method/arch/dataset)", value: dashboard.studyFilter || "" });
  filter.addEventListener("input", () => { dashboard.studyFilter = filter.value; applyFilter(); });
  view.append(el("div", { class: "controls" }, filter));
  dashboard.folded = dashboard.folded || new Set();
  const rows = [];
  let method = null, arch = null;
  const toggle = key => () => { dashboard.folded.has(key) ? dashboard.folded.delete(key) : dashboard.folded.add(key); applyFilter(); };
  for (const s of o.studies) {
    const m = (s.final ? "final: " : "") + (s.method || "(no method)");
    if (m !== method) { method = m; arch = null; rows.push(el("tr", { class: "group", "data-group": m, onclick: toggle(m) }, el("td", { colspan: 10, class: "name", title: m }, m))); }
    if (s.arch !== arch) {
      arch = s.arch;
      const key = m + "\u0000" + s.arch;
      rows.push(el("tr", { class: "group2", "data-group": key, "data-parent": m, onclick: toggle(key) }, el("td", { colspan: 10, class: "name", title: s.arch || "" }, s.arch || "(no architecture)")));
    }
    const finished = s.complete + s.pruned;
    const pct = s.budget ? Math.min(100, 100 * finished / s.budget) : 0;
    const bar = el("div", { class: "bar" }, el("span", { style: "width:" + pct.toFixed(0) + "%" }));
    rows.push(el("tr", { class: "clickable study-row", "data-study": s.name, "data-parent": m, "data-arch": m + "\u0000" + s.arch, onclick: rowClick(studyHref(s.name)) },
      nameCell(s.dataset || s.name, studyHref(s.name)), el("td", {}, bar),
      cell(s.budget ? finished + " / " + s.budget : String(finished), true),
      cell(String(s.running), true), el("td", { class: "num" }, String(s.fail), reason(s.fail_reason)), cell(String(s.pruned), true),
      el("td", { class: "num", title: s.metric }, fmt.num(s.best, 4)), cell(fmt.lr(s.best_lr), true), cell(fmt.dur(s.seconds), true),
      s.stopped ? el("td", { class: "num muted stopped", title: "below its budget with nothing running or waiting" }, "stopped") : cell(fmt.dur(s.eta_seconds), true)));
  }
  view.append(table(["dataset", "progress", "finished", "running", "failed", "pruned", "best", "best lr", "time", "ETA"], rows, { num: [2, 3, 4, 5, 6, 7, 8, 9] }));
  applyFilter(view);
}

// applyFilter shows the overview's studies whose name holds the filter's
// words, under unfolded groups; a group shows while any of its studies
// match, marked ▸ when folded.
function applyFilter(root) {
  root = root || document;
  const words = (dashboard.studyFilter || "").toLowerCase().split(/\s+/).filter(Boolean);
  const folded = dashboard.folded || new Set();
  const matching = new Set();
  for (const r of root.querySelectorAll("tr.study-row")) {
    const name = r.getAttribute("data-study").toLowerCase();
    const match = words.every(w => name.includes(w));
    if (match) { matching.add(r.getAttribute("data-parent")); matching.add(r.getAttribute("data-arch")); }
    r.hidden = !match || folded.has(r.getAttribute("data-parent")) || folded.has(r.getAttribute("data-arch"));
  }
  for (const g of root.querySelectorAll("tr.group, tr.group2")) {
    const key = g.getAttribute("data-group"), parent = g.getAttribute("data-parent");
    g.hidden = !matching.has(key) || (parent !== null && folded.has(parent));
    g.classList.toggle("folded", folded.has(key));
  }
}

// progress is a trial's validations so far, one an epoch, or the last
// optimiser step it reported at in a study that validates every few steps.
function progress(t, unit) {
  if (unit !== "step") return String(t.intermediate.length);
  return t.intermediate.length ? String(Math.max(...t.intermediate.map(p => p[0]))) : "—";
}

async function live(view) {
  const o = await api("/api/live");
  view.append(el("h1", {}, "Live: " + o.running.length + " running trial" + (o.running.length === 1 ? "" : "s")));
  if (!o.running.length) { view.append(el("p", { class: "muted" }, "No trial is running.")); return; }
  const rows = o.running.map(r => el("tr", { class: "clickable", onclick: rowClick(trialHref(r.study, r.number)) },
    nameCell(r.study, studyHref(r.study)), el("td", {}, el("a", { href: trialHref(r.study, r.number) }, "#" + r.number)), cell(Object.entries(r.params).map(([k, v]) => k + "=" + fmt.param(v)).join(" ")),
    cell(r.device || "—"), cell(progress(r, r.report_unit), true), cell(fmt.dur(r.seconds), true), cell(fmt.dur(r.eta_seconds), true)));
  view.append(table(["study", "trial", "parameters", "device", "epochs / last step", "elapsed", "ETA"], rows, { num: [4, 5, 6] }));
  const charts = el("div", { class: "charts" });
  view.append(charts);
  o.running.forEach((r, i) => {
    if (!r.intermediate.length) return;
    chart("live" + i, r.study + " #" + r.number, { width: 360, height: 200,
      axes: [{ incrs: wholeSteps, label: r.report_unit }, { label: r.metric }],
      series: [{ label: r.report_unit }, { label: "validation " + r.metric, stroke: "#2f6fdb", points: { show: true } }],
      hover: (u, f, idx) => (p => p && "#" + r.number + " (" + paramText(r.params) + "), " + p)(pointText(u, 1, idx, r.report_unit)),
      onPick: () => go(trialHref(r.study, r.number)),
      key: r.study + "#" + r.number,
    }, [r.intermediate.map(p => p[0]), r.intermediate.map(p => plottable(p[1]))], charts);
  });
}

async function study(view, name) {
  const s = await api("/api/study?name=" + encodeURIComponent(name));
  dashboard.studyName = s.name;
  view.append(el("h1", {}, s.name), el("p", { class: "muted" },
    [s.method, s.arch, s.dataset].filter(Boolean).join(" · ") + " · " + s.direction + " " + s.metric + (s.budget ? " · budget " + s.budget : "")));
  // Charts draw finite values; ±∞ and NaN are in the table below.
  const done = s.trials.filter(t => t.state === "COMPLETE" && typeof t.value === "number");
  const charts = el("div", { class: "charts" });
  view.append(charts);
  // Optimisation history: each complete trial's value and the best so far.
  const lrOf = new Map(done.filter(t => typeof t.params.lr === "number").map(t => [t.number, t.params.lr]));
  const maximize = s.direction.toLowerCase() === "maximize";
  let best = null;
  const hist = [[], [], []];
  for (const t of done) {
    best = best === null ? t.value : (maximize ? Math.max(best, t.value) : Math.min(best, t.value));
    hist[0].push(t.number); hist[1].push(t.value); hist[2].push(best);
  }
  chart("history", "Optimisation history (" + done.length + " complete trials)", {
    scales: { x: { time: false } },
    axes: [{ incrs: wholeSteps, label: "trial" }, { label: s.metric }],
    series: [{ label: "trial", value: (u, v) => v === null ? "—" : "#" + v + (u.info.has(v) ? ", lr " + fmt.lr(u.info.get(v)) : "") },
      { label: "value", stroke: "transparent", points: { show: true, size: 7, fill: "#2f6fdb", stroke: "#2f6fdb" } },
      { label: "best so far", stroke: "#2b8a3e", width: 2, points: { show: false } }],
    onPick: i => go(trialHref(s.name, hist[0][i])),
    info: lrOf,
  }, hist, charts);
  if (s.objectives > 1) {
    view.insertBefore(el("p", { class: "notice", id: "objectives" }, "This study has " + s.objectives +
      " objectives; the dashboard reads the first only: its values, best and charts are the first objective's."), charts);
  }
  // A slice plot per parameter: its value against the trial's (learning
  // rate first, always on a log axis; the others on one where they were
  // sampled on one; categorical parameters by their choices).
  const names = [...new Set(done.flatMap(t => Object.keys(t.params)))].sort((a, b) => (a !== "lr") - (b !== "lr") || a.localeCompare(b));
  for (const p of names) {
    const has = done.filter(t => t.params[p] !== undefined);
    const categorical = has.some(t => typeof t.params[p] !== "number");
    const lr = p === "lr" && !categorical;
    const choices = categorical ? [...new Set(has.map(t => String(t.params[p])))].sort() : [];
    const x = t => categorical ? choices.indexOf(String(t.params[p])) : t.params[p];
    const pts = has.slice().sort((a, b) => x(a) - x(b));
    const log = lr || (s.log_params || []).includes(p) && !categorical;
    const ticks = categorical ? (u, vals) => vals.map(v => Number.isInteger(v) && choices[v] !== undefined ? choices[v] : "")
      : lr ? (u, vals) => vals.map(v => v === null ? "" : Number(v).toExponential(0)) : undefined;
    chart(lr ? "lr" : "slice-" + p, lr ? "Learning rate vs value" : p + " vs value", {
      scales: { x: { time: false, distr: log ? 3 : 1, range: categorical ? [-0.5, choices.length - 0.5] : undefined } },
      axes: [{ label: lr ? "learning rate" : p, values: ticks, incrs: categorical ? [1] : undefined }, { label: s.metric }],
      series: [{ label: p, value: (u, v, si, i) => i === null || i === undefined || !u.info[i] ? "—"
        : "#" + u.info[i].number + ", " + p + " " + (lr ? fmt.lr(v) : fmt.param(u.info[i].params[p])) },
        { label: "value", stroke: "transparent", points: { show: true, size: 6, fill: lr ? "#e67700" : "#7048e8" } }],
      onPick: i => go(trialHref(s.name, pts[i].number)),
      info: pts,
      key: categorical ? choices.join("\u0000") : "",
    }, [pts.map(x), pts.map(t => t.value)], charts);
  }
  if (names.length > 1) charts.append(parallel(done, names, (s.log_params || []), s.metric, s.direction.toLowerCase() === "maximize"));
  if (s.importance && s.importance.length > 1) charts.append(importance(s.importance));
  // Intermediate values of every trial (up to the 40 most recent).
  const lines = 40;
  const withSteps = s.trials.filter(t => t.intermediate.length).slice(-lines);
  if (withSteps.length) {
    const steps = [...new Set(withSteps.flatMap(t => t.intermediate.map(p => p[0])))].sort((a, b) => a - b);
    const data = [steps];
    const series = [{ label: s.report_unit }];
    // Always as many series as lines can be (the unused empty): a trial
    // joining them then changes the data, not the chart, and a zoom stays.
    for (let i = 0; i < Math.max(lines, withSteps.length); i++) {
      const t = withSteps[i];
      const m = new Map(t ? t.intermediate.map(p => [p[0], p[1]]) : []);
      data.push(steps.map(x => m.has(x) ? plottable(m.get(x)) : null));
      series.push({ label: t ? "#" + t.number : "", stroke: `hsl(${(i * 47) % 360} 60% 45%)`, spanGaps: true, points: { show: true, size: 4 } });
    }
    chart("intermediate", "Intermediate values (" + withSteps.length + " trials)", { scales: { x: { time: false } },
      axes: [{ incrs: wholeSteps, label: s.report_unit }, { label: s.metric }], series,
      // Hover names the line nearest the cursor; a click opens its trial.
      hover: (u, f, idx) => f && withSteps[f - 1] ? (t => "#" + t.number + " (" + paramText(t.params) + "), " + (pointText(u, f, idx, s.report_unit) || "no value at this " + s.report_unit))(withSteps[f - 1]) : "",
      onPick: (idx, f) => { if (f && withSteps[f - 1]) go(trialHref(s.name, withSteps[f - 1].number)); },
      // No key: a new trial among the lines keeps the chart (and its zoom);
      // the hover and the click read the trials of the latest poll.
    }, data, charts);
  }
  // Trial table: filter by state, sort by a column.
  const state = dashboard.stateFilter || "";
  const select = el("select", { id: "state-filter" }, ["", "COMPLETE", "RUNNING", "PRUNED", "FAIL", "WAITING"].map(v => {
    const o = el("option", { value: v }, v || "all states");
    if (v === state) o.selected = true;
    return o;
  }));
  select.addEventListener("change", () => { dashboard.stateFilter = select.value; render(); });
  view.append(el("h2", {}, "Trials"), el("div", { class: "controls" }, "show ", select));
  const sortKey = dashboard.sortKey || "number";
  const key = { number: t => t.number, value: t => t.value === null || Number.isNaN(Number(t.value)) ? -Infinity : Number(t.value), lr: t => t.params.lr || 0, seconds: t => t.seconds };
  const shown = s.trials.filter(t => !state || t.state === state).sort((a, b) => key[sortKey](a) - key[sortKey](b));
  if (dashboard.sortDesc) shown.reverse();
  const head = el("tr", {}, [["number", "#"], [null, "state"], ["value", "value"], ["lr", "parameters"], [null, s.report_unit === "step" ? "last step" : "epochs"], ["seconds", "time"]].map(([k, label]) =>
    el("th", { class: k ? "sortable" : "", onclick: () => { if (!k) return; dashboard.sortDesc = dashboard.sortKey === k ? !dashboard.sortDesc : false; dashboard.sortKey = k; render(); } },
      label + (k && k === sortKey ? (dashboard.sortDesc ? " ▾" : " ▴") : ""))));
  const rows = shown.map(t => el("tr", { class: "clickable trial-row", onclick: rowClick(trialHref(s.name, t.number)) },
    el("td", { class: "num" }, el("a", { href: trialHref(s.name, t.number) }, String(t.number))),
    el("td", { class: "state-" + t.state }, t.state, reason(t.fail_reason)), cell(fmt.num(t.value, 4), true),
    cell(Object.entries(t.params).map(([k, v]) => k + "=" + fmt.param(v)).join(" ")), cell(progress(t, s.report_unit), true), cell(fmt.dur(t.seconds), true)));
  view.append(el("table", { id: "trials" }, el("thead", {}, head), el("tbody", {}, rows)));
}

// importance lists each parameter's share of what made the best 10 % of
// trials (PED-ANOVA, Optuna's default; computed by the server).
function importance(list) {
  const box = el("div", { class: "chart", "data-chart": "importance", id: "importance" },
    el("h3", { title: "PED-ANOVA, as optuna.importance.get_param_importances computes it: how much each parameter's values among the best 10 % of complete trials differ from its values in all of them" },
      "Parameter importance (PED-ANOVA, for the best 10 %)"));
  box.append(el("table", { class: "importance" }, el("tbody", {}, list.map(p => el("tr", { title: p.param + ": " + p.value.toFixed(4) },
    el("td", { class: "name" }, p.param),
    el("td", {}, el("div", { class: "bar" }, el("span", { style: "width:" + (100 * p.value).toFixed(1) + "%" }))),
    el("td", { class: "num" }, (100 * p.value).toFixed(1) + " %"))))));
  return box;
}

// parallel draws a parallel-coordinate plot: an axis per parameter and one
// for the value, a line per complete trial, darker the better; a click on a
// line opens its trial.
function parallel(trials, names, logParams, metric, maximize) {
  const W = 520, H = 260, top = 28, bottom = 20, left = 20, right = 20;
  const axes = names.concat(["value"]);
  const get = (t, a) => a === "value" ? t.value : t.params[a];
  const scales = axes.map(a => {
    const vals = trials.map(t => get(t, a)).filter(v => v !== undefined);
    if (vals.some(v => typeof v !== "number")) {
      const choices = [...new Set(vals.map(String))].sort();
      return { f: v => choices.length > 1 ? choices.indexOf(String(v)) / (choices.length - 1) : 0.5, lo: choices[0], hi: choices[choices.length - 1] };
    }
    const log = logParams.includes(a), tr = v => log ? Math.log(v) : v;
    const lo = Math.min(...vals), hi = Math.max(...vals);
    return { f: v => hi > lo ? (tr(v) - tr(lo)) / (tr(hi) - tr(lo)) : 0.5, lo: fmt.param(lo), hi: fmt.param(hi) };
  });
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("id", "parallel");
  const node = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  const X = i => left + i * (W - left - right) / Math.max(1, axes.length - 1);
  const Y = f => top + (1 - f) * (H - top - bottom);
  const values = trials.map(t => t.value), vlo = Math.min(...values), vhi = Math.max(...values);
  for (const t of trials) {
    const pts = axes.map((a, i) => { const v = get(t, a); return v === undefined ? null : X(i) + "," + Y(scales[i].f(v)); }).filter(Boolean).join(" ");
    const good = vhi > vlo ? (t.value - vlo) / (vhi - vlo) : 1;
    const line = node("polyline", { points: pts, fill: "none", stroke: `hsl(220 70% ${75 - 45 * (maximize ? good : 1 - good)}%)`, "stroke-width": 1.5, class: "pc-line", "data-trial": t.number });
    line.append(Object.assign(document.createElementNS(ns, "title"), { textContent: "#" + t.number + ": " + axes.map(a => a + " " + fmt.param(get(t, a))).join(", ") }));
  }
  axes.forEach((a, i) => {
    node("line", { x1: X(i), x2: X(i), y1: top, y2: H - bottom, stroke: "#888" });
    node("text", { x: X(i), y: 12, "text-anchor": "middle", "font-size": 11 }, a === "value" ? metric : a);
    node("text", { x: X(i), y: top - 4, "text-anchor": "middle", "font-size": 9, fill: "#666" }, String(scales[i].hi));
    node("text", { x: X(i), y: H - 6, "text-anchor": "middle", "font-size": 9, fill: "#666" }, String(scales[i].lo));
  });
  const box = el("div", { class: "chart", "data-chart": "parallel" }, el("h3", {}, "Parallel coordinates (" + trials.length + " complete trials)"));
  box.append(svg);
  svg.addEventListener("click", e => { const l = e.target.closest(".pc-line"); if (l) go("#/trial/" + encodeURIComponent(dashboard.studyName) + "/" + l.getAttribute("data-trial")); });
  return box;
}

async function trial(view, name, number) {
  const o = await api("/api/trial?study=" + encodeURIComponent(name) + "&number=" + encodeURIComponent(number));
  const t = o.trial;
  view.append(el("h1", {}, o.study + " #" + t.number),
    el("p", {}, el("span", { class: "state-" + t.state }, t.state), " · " + o.metric + " " + fmt.num(t.value, 4) + " · " + fmt.dur(t.seconds),
      " · ", el("a", { href: "#/study/" + encodeURIComponent(o.study) }, "back to the study")));
  const kv = obj => el("table", { class: "kv" }, el("tbody", {}, Object.keys(obj || {}).sort().map(k => {
    const v = obj[k];
    const text = typeof v === "object" && v !== null ? JSON.stringify(v) : (typeof v === "number" ? fmt.param(v) : String(v));
    return el("tr", {}, el("td", { class: "name", title: k }, k), el("td", { class: "value", title: text.length > 400 ? text.slice(0, 4000) : "" }, text.length > 400 ? text.slice(0, 400) + "…" : text));
  })));
  view.append(el("h2", {}, "Parameters"), kv(t.params));
  if (t.intermediate.length) {
    const charts = el("div", { class: "charts" });
    view.append(charts);
    chart("trial", "Intermediate values", {
      axes: [{ incrs: wholeSteps, label: o.report_unit }, { label: o.metric }],
      series: [{ label: o.report_unit }, { label: o.metric, stroke: "#2f6fdb", points: { show: true } }],
      hover: (u, f, idx) => pointText(u, 1, idx, o.report_unit),
      hint: "hover a point to see its value",
    }, [t.intermediate.map(p => p[0]), t.intermediate.map(p => plottable(p[1]))], charts);
    const odd = t.intermediate.filter(p => typeof p[1] !== "number");
    if (odd.length) view.append(el("p", { class: "muted", id: "non-finite" }, "Not drawn: " + odd.map(p => o.report_unit + " " + p[0] + " = " + fmt.num(p[1])).join(", ")));
  }
  if (t.state === "WAITING") view.append(el("p", { class: "muted", id: "waiting" }, "Waiting: queued (by a retry, `sweep final` or an enqueue) and not yet started by a worker."));
  const attrs = Object.assign({}, t.user_attrs);
  const stderrTail = attrs.stderr_tail;
  delete attrs.stderr_tail;
  view.append(el("h2", {}, "User attributes"), kv(attrs), el("h2", {}, "System attributes"), kv(t.system_attrs));
  const log = o.log || stderrTail;
  if (log) view.append(el("h2", {}, o.log ? "stderr.log (end)" : "stderr (end, as recorded)"), el("pre", { id: "log" }, log));
}

async function selection(view) {
  const o = await api("/api/selection");
  view.append(el("h1", {}, "Architecture selection (Appendix D.2)"),
    el("p", { class: "muted" }, "Per method: each candidate's best validation value per dataset and their mean; the best mean wins (the same code as `sweep best`)."));
  for (const m of o.methods) {
    view.append(el("h2", {}, m.method + (m.chosen ? ": " + m.chosen : "")));
    const rows = m.archs.map(a => el("tr", { class: a.arch === m.chosen ? "chosen" : "" },
      cell(a.arch + (a.complete ? "" : " (incomplete)")), cell(fmt.num(a.mean, 4), true),
      m.datasets.map(ds => {
        const c = a.best[ds];
        return el("td", { class: "num" }, c ? el("a", { href: trialHref(c.study, c.number), title: c.study + " #" + c.number }, fmt.num(c.value, 4) + " @ " + fmt.lr(c.lr)) : "—");
      })));
    view.append(table(["candidate", "mean"].concat(m.datasets), rows, { num: [1].concat(m.datasets.map((_, i) => i + 2)) }));
  }
  if (o.table1) {
    view.append(el("h2", {}, o.table1.title || "Table 1"),
      table(o.table1.header, o.table1.rows.map(r => el("tr", {}, r.map((c, i) => cell(c, i > 0))))));
    for (const n of o.table1.notes || []) view.append(el("p", { class: "muted" }, n));
  } else {
    view.append(el("p", { class: "muted" }, "Table 1 appears once `sweep final` has written final runs."));
  }
  for (const f of o.figures || []) view.append(el("div", {}, el("img", { class: "figure", src: "/figure/" + encodeURIComponent(f), alt: f })));
}

// ---- routing and live updates -------------------------------------------

function go(hash) { location.hash = hash; }

let rendering = null;
async function render() {
  const hash = location.hash || "#/";
  dashboard.rendering = hash;
  dashboard.drawn = new Set();
  const parts = hash.slice(2).split("/").map(decodeURIComponent);
  const view = document.getElementById("view");
  const next = el("main", { id: "view" });
  // A filter being typed in keeps its focus and caret.
  const active = document.activeElement, focused = active && active.id;
  const caret = active && active.selectionStart !== undefined ? [active.selectionStart, active.selectionEnd] : null;
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.getAttribute("href") === "#/" + (parts[0] || ""));
  try {
    if (parts[0] === "live") await live(next);
    else if (parts[0] === "selection") await selection(next);
    else if (parts[0] === "study") await study(next, parts.slice(1).join("/"));
    else if (parts[0] === "trial") await trial(next, parts.slice(1, -1).join("/"), parts[parts.length - 1]);
    else await overview(next);
  } catch (e) {
    next.append(el("p", { class: "error" }, String(e.message || e)));
  }
  view.replaceWith(next);
  // Charts this view did not draw again are gone with the old page.
  for (const [name, u] of Object.entries(dashboard.charts)) {
    if (!dashboard.drawn.has(name)) { u.destroy(); delete dashboard.charts[name]; }
  }
  dashboard.chartsView = hash;
  const again = focused && document.getElementById(focused);
  if (again && again.focus) { again.focus(); if (again.setSelectionRange && caret) again.setSelectionRange(caret[0], caret[1]); }
  // A log is read from its end: where the trial stopped, and why.
  for (const pre of next.querySelectorAll("pre")) pre.scrollTop = pre.scrollHeight;
  dashboard.view = hash;
  dashboard.renders++;
}

function scheduleRender() {
  // One render at a time; a change during a render renders once more after.
  if (rendering) { rendering.again = true; return; }
  rendering = { again: false };
  render().finally(() => { const again = rendering.again; rendering = null; if (again) scheduleRender(); });
}

window.addEventListener("hashchange", () => { dashboard.stateFilter = ""; dashboard.sortKey = ""; dashboard.sortDesc = false; scheduleRender(); });

// Follow the database: ask for its change token every poll_ms and redraw
// the view when it moves (polling holds no connection between asks).
async function follow() {
  const status = document.getElementById("status");
  let wait = 1000;
  try {
    const t = await api("/api/token");
    wait = t.poll_ms || wait;
    if (dashboard.problem) { dashboard.problem = ""; scheduleRender(); }
    status.textContent = "live, checked " + new Date().toLocaleTimeString();
    if (!document.getElementById("storage").textContent) api("/api/overview").then(o => { document.getElementById("storage").textContent = o.storage; }).catch(() => {});
    status.className = "live";
    if (dashboard.token && dashboard.token !== t.token) scheduleRender();
    dashboard.token = t.token;
  } catch (e) {
    // The server's reason (a database deleted or replaced under it), or none.
    const m = String(e.message || e).match(/^\/api\/token: 503 (.*)/s);
    status.textContent = m ? m[1].trim() : "cannot reach the dashboard; retrying";
    status.className = m ? "error" : "";
    if (m && dashboard.problem !== m[1]) { dashboard.problem = m[1]; scheduleRender(); }
  }
  setTimeout(follow, wait);
}

api("/api/overview").then(o => { document.getElementById("storage").textContent = o.storage; }).catch(() => {});
scheduleRender();
follow();
