// The web leaderboard: plain JS over the gateway's JSON API, no build step.
// Routes (location.hash): #/track/A, #/submission/ID, #/mine.
"use strict";

const state = { challenge: null, board: null, sort: { key: "rank", dir: 1 }, timer: null, nav: 0 };
// Each route() bumps state.nav; a view whose data arrives after the next route() began is dropped.
const stale = (nav) => nav !== state.nav;
const $ = (sel) => document.querySelector(sel);
const SIZE_COLUMNS = [
  { key: "model_size_mb", title: "Size (MB)", fmt: (v) => (v == null ? "" : v.toFixed(3)) },
  { key: "latency_ms", title: "Latency (ms)", fmt: (v) => (v == null ? "" : v.toFixed(3)) },
];

function pct(rate) { return rate == null ? "" : (100 * rate).toFixed(3); }
function esc(text) {
  const div = document.createElement("div");
  div.textContent = text == null ? "" : String(text);
  return div.innerHTML;
}
function token() { return localStorage.getItem("mfr-token") || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers.Authorization = "Bearer " + token();
  const reply = await fetch(path, Object.assign({}, options, { headers }));
  const body = reply.headers.get("content-type")?.includes("json") ? await reply.json() : await reply.text();
  if (!reply.ok) {
    const err = new Error(body?.error?.message || reply.statusText);
    err.status = reply.status;
    err.code = body?.error?.code;
    throw err;
  }
  return body;
}

// What each protocol's column holds (its rate): TAR, 10-fold accuracy or 1:N TPIR.
const RATE_NAMES = { tar: "TAR", accuracy: "accuracy", tpir: "TPIR" };
const rateOf = (p) => p.rate || "tar";
// The rate's name goes in the header once a challenge ranks by more than TAR.
const mixedRates = () => state.challenge.protocols.some((p) => rateOf(p) !== "tar");

function columns() {
  const mixed = mixedRates();
  const protocols = state.challenge.protocols.map((p) => ({
    key: "p:" + p.id, protocol: p.id, fmt: pct,
    title: mixed ? `${p.title} (${RATE_NAMES[rateOf(p)] || rateOf(p)})` : p.title,
  }));
  return [
    { key: "rank", title: "#", fmt: (v) => v },
    { key: "participant", title: "Participant", fmt: null },
    { key: "organisation", title: "Organisation", fmt: (v) => (v == null ? "<span class=muted>hidden</span>" : esc(v)), raw: true },
    ...protocols,
    { key: "ranking_score", title: "Score", fmt: pct, cls: "score" },
    ...SIZE_COLUMNS,
    { key: "submitted_at", title: "Submitted", fmt: (v) => esc(v.slice(0, 16).replace("T", " ")), raw: true },
  ];
}

function valueOf(entry, col) {
  if (col.protocol) return entry.protocols[col.protocol];
  return entry[col.key];
}

function sortedEntries() {
  const cols = columns();
  const col = cols.find((c) => c.key === state.sort.key) || cols[0];
  const entries = [...state.board.entries];
  entries.sort((a, b) => {
    const x = valueOf(a, col), y = valueOf(b, col);
    if (x == null && y == null) return a.rank - b.rank;
    if (x == null) return 1;
    if (y == null) return -1;
    const cmp = typeof x === "string" ? x.localeCompare(y) : x - y;
    return cmp * state.sort.dir || a.rank - b.rank;
  });
  return entries;
}

function renderTabs(active) {
  const tabs = state.challenge.tracks.map((t) =>
    `<a role="tab" href="#/track/${esc(t.id)}" data-track="${esc(t.id)}" class="${active === t.id ? "active" : ""}"
        aria-selected="${active === t.id}">Track ${esc(t.id)}<small>${esc(t.training_set)}</small></a>`);
  tabs.push(`<a role="tab" href="#/mine" class="${active === "mine" ? "active" : ""}" id="tab-mine">My submissions</a>`);
  $("#tabs").innerHTML = tabs.join("");
}

function renderBoard() {
  const cols = columns();
  const head = cols.map((c) => {
    const mark = state.sort.key === c.key ? (state.sort.dir > 0 ? " ▲" : " ▼") : "";
    return `<th data-key="${c.key}" class="${c.cls || ""}" tabindex="0">${esc(c.title)}${mark}</th>`;
  }).join("");
  const rows = sortedEntries().map((e) => {
    const cells = cols.map((c) => {
      const v = valueOf(e, c);
      if (c.key === "participant") {
        const badge = e.baseline ? ' <span class="badge" data-testid="baseline-badge">baseline</span>' : "";
        return `<td><a href="#/submission/${esc(e.submission_id)}">${esc(v)}</a>${badge}</td>`;
      }
      const text = c.raw ? c.fmt(v) : esc(c.fmt(v));
      return `<td class="${c.cls || ""} ${c.protocol || typeof v === "number" ? "num" : ""}">${text}</td>`;
    }).join("");
    return `<tr class="${e.baseline ? "baseline" : ""}" data-submission="${esc(e.submission_id)}">${cells}</tr>`;
  }).join("");
  const b = state.board;
  const status = b.frozen ? `<p class="frozen" data-testid="frozen">Final leaderboard (frozen${b.frozen_at ? " " + esc(b.frozen_at.slice(0, 16).replace("T", " ")) : ""})</p>` : "";
  $("#view").innerHTML = `${status}
    <table id="leaderboard" data-track="${esc(b.track)}">
      <thead><tr>${head}</tr></thead>
      <tbody>${rows || `<tr><td colspan="${cols.length}" class="muted">No scored submission yet.</td></tr>`}</tbody>
    </table>
    <p class="muted">Export: <a href="/v1/leaderboard/${esc(b.track)}/export?format=csv">CSV</a> ·
      <a href="/v1/leaderboard/${esc(b.track)}/export?format=json">JSON</a></p>`;
  document.querySelectorAll("#leaderboard th").forEach((th) => {
    const sort = () => {
      const key = th.dataset.key;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : (key === "rank" || key === "participant" || key === "organisation" || key.endsWith("_ms") || key.endsWith("_mb") ? 1 : -1) };
      renderBoard();
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (ev) => { if (ev.key === "Enter") sort(); });
  });
}

async function showTrack(track, nav) {
  renderTabs(track);
  const board = await api(`/v1/leaderboard/${encodeURIComponent(track)}`);
  if (stale(nav)) return;
  state.board = board;
  renderBoard();
  clearInterval(state.timer);
  state.timer = setInterval(async () => {
    if (location.hash !== `#/track/${track}`) return;
    state.board = await api(`/v1/leaderboard/${encodeURIComponent(track)}`);
    renderBoard();
  }, 10000);
}

// --- plots: ROC (TAR against FAR) and DET (FRR against FAR), log axes, inline SVG ---
const COLORS = ["#1b6ac9", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0c8599", "#c92a2a"];

function plot(kind, curves) {
  const W = 420, H = 300, L = 54, R = 12, T = 14, B = 40;
  const points = curves.flatMap((c) => c.points);
  if (!points.length) return `<p class="muted">No ROC points were recorded.</p>`;
  const minFar = Math.min(...points.map((p) => p.far).filter((v) => v > 0), 1e-6);
  const x0 = Math.floor(Math.log10(minFar)), x1 = 0;
  const X = (far) => L + ((Math.log10(Math.max(far, 10 ** x0)) - x0) / (x1 - x0)) * (W - L - R);
  let Y, yTicks;
  if (kind === "roc") {
    Y = (tar) => T + (1 - tar) * (H - T - B);
    yTicks = [0, 0.25, 0.5, 0.75, 1].map((v) => [v, (100 * v).toFixed(0) + "%"]);
  } else {
    const frrs = points.map((p) => 1 - p.tar).filter((v) => v > 0);
    const y0 = Math.floor(Math.log10(Math.min(...frrs, 0.01)));
    Y = (tar) => T + (1 - (Math.log10(Math.max(1 - tar, 10 ** y0)) - y0) / (0 - y0)) * (H - T - B);
    yTicks = [];
    for (let e = y0; e <= 0; e++) yTicks.push([1 - 10 ** e, `1e${e}`]);
  }
  const grid = [];
  for (let e = x0; e <= x1; e++) {
    grid.push(`<line x1="${X(10 ** e)}" y1="${T}" x2="${X(10 ** e)}" y2="${H - B}" class="grid"/>`);
    grid.push(`<text x="${X(10 ** e)}" y="${H - B + 14}" text-anchor="middle">1e${e}</text>`);
  }
  for (const [v, label] of yTicks) {
    grid.push(`<line x1="${L}" y1="${Y(v)}" x2="${W - R}" y2="${Y(v)}" class="grid"/>`);
    grid.push(`<text x="${L - 4}" y="${Y(v) + 4}" text-anchor="end">${label}</text>`);
  }
  const lines = curves.map((c, i) => {
    const pts = [...c.points].sort((a, b) => a.far - b.far).map((p) => `${X(p.far).toFixed(1)},${Y(p.tar).toFixed(1)}`);
    return `<polyline points="${pts.join(" ")}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.8"><title>${esc(c.title)}</title></polyline>`;
  }).join("");
  const legend = curves.map((c, i) => `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(c.title)}</span>`).join("");
  const ylabel = kind === "roc" ? "TAR" : "FRR (1 − TAR)";
  return `<figure class="plot" data-testid="${kind}-plot">
    <svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${kind.toUpperCase()} curve">
      ${grid.join("")}
      <rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" class="frame"/>
      ${lines}
      <text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">FAR</text>
      <text x="12" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 12 ${(T + H - B) / 2})">${ylabel}</text>
    </svg><figcaption>${kind === "roc" ? "ROC" : "DET"} · ${legend}</figcaption></figure>`;
}

function validationReport(v, errors) {
  if (!v && !(errors && errors.length)) return `<p class="muted">Validation has not run yet.</p>`;
  const rows = [];
  const item = (k, label, fmt = (x) => x) => { if (v && v[k] !== undefined && v[k] !== null && v[k] !== "") rows.push(`<tr><th>${label}</th><td>${esc(fmt(v[k]))}</td></tr>`); };
  item("ok", "Accepted", (x) => (x ? "yes" : "no"));
  item("feature_dim", "Feature dimension");
  item("model_size_mb", "Model size (MB)", (x) => Number(x).toFixed(3));
  item("latency_ms", "Latency (ms)", (x) => Number(x).toFixed(3));
  item("latency_limit_ms", "Latency limit here (ms)", (x) => Number(x).toFixed(3));
  item("latency_factor", "Machine factor vs V100", (x) => Number(x).toFixed(3));
  item("device", "Measured on");
  item("input_mean", "Input mean");
  item("input_std", "Input std");
  const list = (title, items) => (items && items.length ? `<h4>${title}</h4><ul class="findings">${items.map((e) => `<li><code>${esc(e.code)}</code> ${esc(e.message)}</li>`).join("")}</ul>` : "");
  return `<table class="report">${rows.join("")}</table>${list("Errors", errors)}${list("Warnings", v && v.warnings)}`;
}

function embeddingReport(e) {
  if (!e || !e.name) return "";
  const rows = [["Runtime", e.name], ["Version", e.version], ["Device", e.device],
    ["Batch size", e.batch_size], ["Instead of the challenge's runtime because", e.fallback_reason]]
    .filter(([, value]) => value !== undefined && value !== null && value !== "")
    .map(([label, value]) => `<tr><th>${label}</th><td>${esc(value)}</td></tr>`);
  return `<h3>Embedded with</h3><table class="report" data-testid="embedding">${rows.join("")}</table>`;
}

function num(v, digits = 6) { return v == null ? "" : Number(v).toFixed(digits); }

// Accuracy protocols: each fold's accuracy and the threshold chosen on the other folds.
function accuracyTables(s) {
  return state.challenge.protocols.filter((p) => s.scores[p.id] && s.scores[p.id].rate === "accuracy").map((p) => {
    const sc = s.scores[p.id];
    const folds = sc.fold_accuracies.map((_, i) => `<th>${i + 1}</th>`).join("");
    const accs = sc.fold_accuracies.map((a) => `<td class="num">${pct(a)}</td>`).join("");
    const ths = sc.thresholds.map((t) => `<td class="num">${t == null ? "+∞" : num(t)}</td>`).join("");
    return `<h3>${esc(p.title)}: accuracy ${pct(sc.accuracy)} % ± ${pct(sc.accuracy_std)} over ${sc.pairs} pairs</h3>
      <table class="scores folds" data-testid="accuracy-${esc(p.id)}"><thead><tr><th>Fold</th>${folds}</tr></thead>
      <tbody><tr><th>Accuracy %</th>${accs}</tr><tr><th>Threshold</th>${ths}</tr></tbody></table>`;
  }).join("");
}

// Identification protocols: TPIR at the FPIR target, FNIR, rank-1, the counts.
function identificationTable(s) {
  const rows = state.challenge.protocols.filter((p) => s.scores[p.id] && s.scores[p.id].rate === "tpir").map((p) => {
    const sc = s.scores[p.id];
    const fpir = sc.fpir ?? p.fpir;
    return `<tr data-protocol="${esc(p.id)}"><th>${esc(p.title)}</th><td class="num">${pct(sc.tpir)}</td><td class="num">${pct(sc.fnir)}</td>
      <td class="num">${pct(sc.rank1)}</td><td class="num">${fpir == null ? "" : Number(fpir).toExponential(0)}</td>
      <td class="num">${sc.threshold == null ? "−∞" : num(sc.threshold)}</td><td class="num">${sc.hits} / ${sc.mated}</td>
      <td class="num">${sc.nonmated_accepted} / ${sc.nonmated}</td></tr>`;
  }).join("");
  return rows ? `<h3>1:N identification</h3><table class="scores" data-testid="identification"><thead><tr><th>Protocol</th>
    <th>TPIR %</th><th>FNIR %</th><th>Rank-1 %</th><th>FPIR target</th><th>Threshold</th><th>Mated hits</th>
    <th>Non-mated accepted</th></tr></thead><tbody>${rows}</tbody></table>` : "";
}

async function showSubmission(id, nav) {
  renderTabs(null);
  let s;
  try {
    s = await api(`/v1/submissions/${encodeURIComponent(id)}`);
  } catch (err) {
    if (stale(nav)) return;
    $("#view").innerHTML = `<p class="error">${esc(err.status === 404 ? "No such submission (or not yours to see)." : err.message)}</p>`;
    return;
  }
  if (stale(nav)) return;
  const titles = Object.fromEntries(state.challenge.protocols.map((p) => [p.id, p.title]));
  const scoreRows = state.challenge.protocols.filter((p) => s.scores[p.id] && (s.scores[p.id].rate || "tar") === "tar").map((p) => {
    const sc = s.scores[p.id];
    return `<tr><th>${esc(p.title)}</th><td class="num">${pct(sc.tar)}</td><td class="num">${sc.far.toExponential(0)}</td>
      <td class="num">${sc.threshold == null ? "−∞" : sc.threshold.toFixed(6)}</td><td class="num">${sc.genuine_accepted} / ${sc.genuine}</td>
      <td class="num">${sc.impostors_accepted} / ${sc.impostor}</td></tr>`;
  }).join("");
  const curves = Object.entries(s.roc || {}).filter(([, pts]) => pts.length).map(([pid, pts]) => ({ title: titles[pid] || pid, points: pts }));
  const owner = s.public_chosen !== undefined;
  const publicButton = owner && s.state === "scored" && !s.public
    ? `<button id="set-public" data-id="${esc(s.id)}">Set Public</button>` : "";
  const who = s.participant ? `${esc(s.participant)}${s.baseline ? ' <span class="badge">baseline</span>' : ""} · ` : "";
  $("#view").innerHTML = `<article id="submission" data-state="${esc(s.state)}">
    <h2>Submission <code>${esc(s.id.slice(0, 8))}</code></h2>
    <p>${who}Track ${esc(s.track)} · <span class="state state-${esc(s.state)}" data-testid="state">${esc(s.state)}</span>
      ${s.public ? '<span class="badge public">public</span>' : ""} · ${esc(s.created_at.slice(0, 19).replace("T", " "))} UTC
      ${s.ranking_score != null ? ` · ranking score <strong data-testid="ranking">${pct(s.ranking_score)}</strong>` : ""} ${publicButton}</p>
    ${s.progress ? `<p class="muted">${esc(s.progress.stage || "")} ${s.progress.done ?? ""}/${s.progress.total ?? ""} ${esc(s.progress.unit || "")}</p>` : ""}
    ${scoreRows ? `<table class="scores"><thead><tr><th>Protocol</th><th>TAR %</th><th>FAR target</th><th>Threshold</th><th>Genuine accepted</th><th>Impostors accepted</th></tr></thead><tbody>${scoreRows}</tbody></table>` : ""}
    <div class="plots">${curves.length ? plot("roc", curves) + plot("det", curves) : ""}
      <div class="kinds">${accuracyTables(s)}${identificationTable(s)}</div></div>
    ${embeddingReport(s.embedding)}
    <h3>Validation report</h3>
    <div data-testid="validation">${validationReport(s.validation, s.errors)}</div>
  </article>`;
  if (!["scored", "rejected", "failed", "cancelled"].includes(s.state)) {
    setTimeout(() => { if (!stale(nav)) showSubmission(id, nav); }, 3000);  // follow it
  }
  $("#set-public")?.addEventListener("click", async (ev) => {
    await api(`/v1/submissions/${encodeURIComponent(ev.target.dataset.id)}/public`, { method: "POST" });
    route();
  });
}

async function showMine(nav) {
  renderTabs("mine");
  if (!token()) {
    $("#view").innerHTML = `<p class="muted">Sign in with your token to see your submissions.</p>`;
    return;
  }
  const [mine, quota] = await Promise.all([api("/v1/submissions"), api("/v1/quota")]);
  if (stale(nav)) return;
  const rows = mine.submissions.map((s) => `<tr data-submission="${esc(s.id)}">
      <td><a href="#/submission/${esc(s.id)}"><code>${esc(s.id.slice(0, 8))}</code></a></td><td>${esc(s.track)}</td>
      <td><span class="state state-${esc(s.state)}">${esc(s.state)}</span></td>
      <td class="num">${pct(s.ranking_score)}</td>
      <td>${s.errors.map((e) => `<code>${esc(e.code)}</code>`).join(" ")}</td>
      <td>${s.public ? '<span class="badge public">public</span>' : (s.state === "scored" ? `<button class="set-public" data-id="${esc(s.id)}">Set Public</button>` : "")}</td>
      <td>${esc(s.created_at.slice(0, 16).replace("T", " "))}</td></tr>`).join("");
  $("#view").innerHTML = `<p data-testid="quota">${quota.remaining} of ${quota.limit} submissions left today; resets ${esc(quota.resets_at.slice(0, 16).replace("T", " "))} UTC.</p>
    <table id="mine"><thead><tr><th>Id</th><th>Track</th><th>State</th><th>Score</th><th>Errors</th><th>Public</th><th>Submitted</th></tr></thead>
    <tbody>${rows || '<tr><td colspan="7" class="muted">No submission yet: <code>mfr submit model.zip --track A</code></td></tr>'}</tbody></table>`;
  document.querySelectorAll(".set-public").forEach((b) => b.addEventListener("click", async () => {
    await api(`/v1/submissions/${encodeURIComponent(b.dataset.id)}/public`, { method: "POST" });
    route();
  }));
}

async function signedIn() {
  if (!token()) { $("#who").textContent = ""; $("#signout").hidden = true; return; }
  try {
    const me = await api("/v1/participants/me");
    $("#who").textContent = "signed in as " + me.name;
    $("#signout").hidden = false;
  } catch (err) {
    localStorage.removeItem("mfr-token");
    $("#who").textContent = "unknown token";
  }
}

async function route() {
  const nav = ++state.nav;
  const [, kind, arg] = (location.hash || "").split("/");
  try {
    if (kind === "submission" && arg) return await showSubmission(decodeURIComponent(arg), nav);
    if (kind === "mine") return await showMine(nav);
    const track = state.challenge.tracks.some((t) => t.id === arg) ? arg : state.challenge.tracks[0].id;
    return await showTrack(track, nav);
  } catch (err) {
    if (!stale(nav)) $("#view").innerHTML = `<p class="error">${esc(err.message)}</p>`;
  }
}

async function main() {
  state.challenge = await api("/v1/challenge");
  const c = state.challenge;
  $("#title").textContent = c.title;
  document.title = c.title + " · leaderboard";
  const when = (t) => (t ? t.slice(0, 16).replace("T", " ") + " UTC" : "—");
  $("#window").textContent = `Submissions ${c.open ? "open" : "closed"}: ${when(c.opens)} to ${when(c.closes)} · ${c.daily_submission_limit} a day · ranking ${Object.entries(c.weights).map(([k, w]) => `${w} × ${k}`).join(" + ")}`;
  $("#signin").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    localStorage.setItem("mfr-token", $("#token").value.trim());
    $("#token").value = "";
    await signedIn();
    route();
  });
  $("#signout").addEventListener("click", () => { localStorage.removeItem("mfr-token"); signedIn(); route(); });
  window.addEventListener("hashchange", route);
  await signedIn();
  await route();
  document.body.dataset.ready = "1";
}

main();
