// agentbus console: one EventSource (api/stream) keeps tickets, KPIs, switches and dead letters live;
// approvals and timelines are fetched on change. No framework and no build step: plain DOM.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { tickets: new Map(), selected: null, source: null, approvalsTimer: null, approvalsPoll: null };

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function api(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  return { ok: response.ok, status: response.status, data };
}

function notice(text, isError) {
  const box = $("#notice");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = false;
}

function refusal(result) {
  const reason = (result.data && result.data.reason) || `HTTP ${result.status}`;
  return (result.status === 403 ? "refused: " : "error: ") + reason;
}

// --- session ---------------------------------------------------------------------------------------

async function start() {
  const me = await api("GET", "api/me");
  if (!me.ok) {
    $("#signin").hidden = false;
    $("#app").hidden = true;
    if (me.status === 403) notice(refusal(me), true);
    return;
  }
  $("#who").textContent = `${me.data.id} (${me.data.roles.join(", ")})`;
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#signout").hidden = false;
  connect();
  refreshApprovals();
  // Approvals live in the escalation service, which may record one a moment after its ticket event.
  if (!state.approvalsPoll) state.approvalsPoll = setInterval(refreshApprovals, 5000);
}

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = await api("POST", "api/session", { token: $("#token").value });
  if (!result.ok) return notice(refusal(result), true);
  $("#token").value = "";
  $("#notice").hidden = true;
  start();
});

$("#signout").addEventListener("click", async () => {
  await api("DELETE", "api/session");
  if (state.source) state.source.close();
  location.reload();
});

// --- live stream -----------------------------------------------------------------------------------

function connect() {
  if (state.source) state.source.close();
  const source = new EventSource(`api/stream?window=${encodeURIComponent($("#window").value)}`);
  state.source = source;
  source.onopen = () => { $("#live").textContent = "live"; $("#live").className = "live"; };
  source.onerror = () => { $("#live").textContent = "reconnecting"; $("#live").className = "live off"; };
  source.addEventListener("tickets", (e) => onTickets(JSON.parse(e.data)));
  source.addEventListener("kpis", (e) => renderKpis(JSON.parse(e.data)));
  source.addEventListener("switches", (e) => renderSwitches(JSON.parse(e.data)));
  source.addEventListener("deadletters", (e) => renderDeadletters(JSON.parse(e.data)));
}

$("#window").addEventListener("change", connect);

function onTickets(rows) {
  // Rows come newest first; re-inserting moves a ticket to the end of the Map (= the top on screen).
  for (const row of rows.slice().reverse()) {
    state.tickets.delete(row.ticket_id);
    state.tickets.set(row.ticket_id, row);
  }
  while (state.tickets.size > 200) state.tickets.delete(state.tickets.keys().next().value);
  renderTickets();
  if (rows.some((r) => r.ticket_id === state.selected)) showTimeline(state.selected);
  // An approval appears or goes when a ticket waits or moves on: look again, at most once a second.
  if (!state.approvalsTimer) state.approvalsTimer = setTimeout(() => { state.approvalsTimer = null; refreshApprovals(); }, 1000);
}

function renderTickets() {
  const rows = Array.from(state.tickets.values()).reverse().slice(0, 100);
  $("#tickets tbody").innerHTML = rows.map((t) => `
    <tr data-ticket="${esc(t.ticket_id)}" class="${t.ticket_id === state.selected ? "selected" : ""}">
      <td><a href="#timeline" data-open="${esc(t.ticket_id)}">${esc(t.ticket_id)}</a></td>
      <td>${esc(t.tenant_id)}</td><td>${esc(t.subject)}</td>
      <td class="status ${esc(t.status)}">${esc(t.status)}</td>
      <td class="steps">${t.steps.map(esc).join(" → ")}</td></tr>`).join("");
}

$("#tickets").addEventListener("click", (event) => {
  const link = event.target.closest("[data-open]");
  if (!link) return;
  event.preventDefault();
  showTimeline(link.dataset.open);
});

// --- timeline --------------------------------------------------------------------------------------

function usd(micro) { return `$${(micro / 1e6).toFixed(6)}`; }

function decisionCell(s) {
  if (!s.verdict) return "";
  const rules = s.rule_ids.length ? s.rule_ids.join(", ") : "-";
  const cap = s.capability ? `<br><small>${esc(s.capability)}</small>` : "";
  return `<span class="${esc(s.verdict)}">${esc(s.verdict)}</span> ${esc(s.tool)} <small>rules ${esc(rules)}</small>` +
    `<br>${esc(s.reason)}${cap}`;
}

function resultCell(s) {
  if (!s.status) return "";
  const detail = s.error ? esc(s.error) : s.result ? `<small>${esc(JSON.stringify(s.result))}</small>` : "";
  return `<span class="${esc(s.status)}">${esc(s.status)}</span> ${detail}`;
}

async function showTimeline(ticketId) {
  state.selected = ticketId;
  renderTickets();
  const result = await api("GET", `api/tickets/${encodeURIComponent(ticketId)}`);
  if (!result.ok) return notice(refusal(result), true);
  const t = result.data;
  $("#timeline").hidden = false;
  $("#timeline-title").innerHTML = `${esc(t.ticket_id)} — <span class="status ${esc(t.status)}">${esc(t.status)}</span>` +
    ` <small>cost ${usd(t.cost.cost_microdollars)} for ${t.cost.model_calls} model calls</small>`;
  $("#steps tbody").innerHTML = t.steps.map((s) => `
    <tr data-step="${esc(s.type)}"><td>${s.n}</td><td>+${s.offset_ms} ms</td>
      <td>${s.latency_ms === null ? "" : `+${s.latency_ms} ms`}</td>
      <td><b>${esc(s.type)}</b>${s.verdict || s.type === "action.executed" ? "" : `<br><small>${esc(s.summary)}</small>`}</td>
      <td>${esc(s.producer)}</td>
      <td>${decisionCell(s)}</td><td>${resultCell(s)}</td><td>${s.cost_microdollars ? usd(s.cost_microdollars) : ""}</td></tr>`).join("");
}

// --- KPIs ------------------------------------------------------------------------------------------

function spark(values, width = 120, height = 28) {
  const known = values.filter((v) => v !== null && v !== undefined);
  const max = Math.max(...known, 1e-9), min = Math.min(...known, 0);
  const x = (i) => (values.length < 2 ? 0 : (i * width) / (values.length - 1));
  const y = (v) => height - 2 - ((v - min) / (max - min || 1)) * (height - 4);
  let d = "", pen = false;
  values.forEach((v, i) => {
    if (v === null || v === undefined) { pen = false; return; }
    d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
    pen = true;
  });
  // Mark the latest figure: with data in one bucket only there is no line to draw.
  const last = values.length - 1 - [...values].reverse().findIndex((v) => v !== null && v !== undefined);
  const dot = last < values.length ? `<circle cx="${x(last).toFixed(1)}" cy="${y(values[last]).toFixed(1)}" r="2"/>` : "";
  return `<svg class="spark" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"><path d="${d}"/>${dot}</svg>`;
}

const pct = (v) => (v === null ? "n/a" : `${(v * 100).toFixed(1)}%`);
const secs = (v) => (v === null ? "n/a" : `${v.toFixed(2)} s`);
const KPIS = [
  ["coverage", "coverage", pct, (f) => `${f.covered}/${f.received} received`],
  ["automation_rate", "automation rate", pct, (f) => `${f.automated}/${f.finished} finished`],
  ["escalation_rate", "escalation rate", pct, (f) => `${f.escalated}/${f.finished} finished`],
  ["verifier_failures", "verifier failures", (v) => String(v), () => "failed checks"],
  ["cost_per_resolved_usd", "cost per resolved", (v) => (v === null ? "n/a" : `$${v.toFixed(6)}`), (f) => `${f.resolved} resolved`],
  ["latency_p50_s", "latency p50", secs, () => "received → finished"],
  ["latency_p95_s", "latency p95", secs, () => "received → finished"],
];

function renderKpis(k) {
  const f = k.figures;
  $("#kpi-window").textContent = `${new Date(f.start).toLocaleTimeString()} – ${new Date(f.end).toLocaleTimeString()}`;
  $("#kpi-cards").innerHTML = KPIS.map(([key, label, fmt, detail]) => `
    <div class="card" data-kpi="${key}"><div class="label">${label}</div>
      <div class="value">${fmt(f[key])}</div><div class="detail">${esc(detail(f))}</div>
      ${spark(k.series.map((b) => b[key]))}</div>`).join("");
  const lag = k.lag;
  const services = Object.keys(lag.latest);
  $("#lag tbody").innerHTML = lag.error
    ? `<tr><td colspan="3">not measured: ${esc(lag.error)}</td></tr>`
    : services.map((s) => `<tr data-service="${esc(s)}"><td>${esc(s)}</td><td>${lag.latest[s] ?? "unknown"}</td>
        <td>${spark(lag.history[s] || [])}</td></tr>`).join("");
}

// --- approvals -------------------------------------------------------------------------------------

async function refreshApprovals() {
  const result = await api("GET", "api/approvals?status=pending");
  const list = $("#approval-list");
  if (!result.ok) { list.innerHTML = `<li>${esc(refusal(result))}</li>`; return; }
  const pending = result.data.approvals;
  list.innerHTML = pending.length ? pending.map((a) => `
    <li class="approval" data-approval="${esc(a.id)}" data-ticket="${esc(a.ticket_id)}">
      <b>${esc(a.tool)}</b> for ${esc(a.ticket_id)} <small>(${esc(a.id)}, needs ${esc(a.required_role)}, rules ${esc(a.rule_ids.join(", "))})</small>
      <div>${esc(a.reason)}</div>
      <pre>${esc(a.preview)}</pre>
      <input class="decision-reason" placeholder="reason (required to reject)" size="28">
      <button data-decide="approve">Approve</button> <button data-decide="reject">Reject</button>
    </li>`).join("") : "<li>no pending approvals</li>";
}

$("#approval-list").addEventListener("click", async (event) => {
  const button = event.target.closest("[data-decide]");
  if (!button) return;
  const item = button.closest("[data-approval]");
  const verb = button.dataset.decide;
  const reason = item.querySelector(".decision-reason").value;
  const result = await api("POST", `api/approvals/${encodeURIComponent(item.dataset.approval)}/${verb}`, { reason });
  if (!result.ok) return notice(refusal(result), true);
  notice(`${result.data.status} ${result.data.id} (ticket ${result.data.ticket_id}) as ${result.data.approver}`);
  refreshApprovals();
});

// --- kill switches ---------------------------------------------------------------------------------

function renderSwitches(engaged) {
  $("#switch-list").innerHTML = engaged.length ? engaged.map((s) => `
    <li class="switch engaged" data-switch="${esc(s.scope)}:${esc(s.target)}">HALTED: ${esc(s.scope)} ${esc(s.target)}
      <small>by ${esc(s.actor)}: ${esc(s.reason)}</small></li>`).join("") : "<li>no kill switch engaged</li>";
}

$("#switch-scope").addEventListener("change", () => {
  const hints = { topic: "e.g. actions.decided", tool: "e.g. payments.issue_refund", agent: "agent:refunds", tenant: "tenant id", global: "all" };
  $("#switch-target").placeholder = hints[$("#switch-scope").value];
});

$("#switch-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const engaged = event.submitter ? event.submitter.value === "1" : true;
  const body = { scope: $("#switch-scope").value, target: $("#switch-target").value, engaged, reason: $("#switch-reason").value };
  const result = await api("POST", "api/switches", body);
  if (!result.ok) return notice(refusal(result), true);
  notice(`${engaged ? "engaged" : "released"} ${result.data.scope} ${result.data.target} as ${result.data.actor}`);
});

// --- dead letters ----------------------------------------------------------------------------------

function renderDeadletters(events) {
  $("#deadletter-list tbody").innerHTML = events.length ? events.map((e) => {
    const p = e.payload;
    return `<tr><td>${esc(new Date(e.occurred_at).toLocaleTimeString())}</td>
      <td>${esc(p.source_topic)}@${p.partition}:${p.offset}</td><td>${esc(p.error_type)}</td>
      <td>${esc(p.consumer)}</td><td>${esc(p.reason)}</td></tr>`;
  }).join("") : `<tr><td colspan="5">no dead letters</td></tr>`;
}

start();
