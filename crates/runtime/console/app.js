// The sqsaga console: a hash-routed page over /api/v1. No framework, no
// build step. The token typed in the header lives in sessionStorage (this
// tab only) and goes out as `Authorization: Bearer`, never as a cookie.
// Live updates: the SSE stream /api/v1/events, read with fetch (EventSource
// cannot send the Authorization header); any saga change re-renders the page.
"use strict";

const API = "/api/v1";
const main = () => document.getElementById("main");
let me = { name: "?", admin: false };
let renderSeq = 0;

// ---------------------------------------------------------------- helpers

function token() {
  return sessionStorage.getItem("sqsaga-token") || "";
}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (token()) headers.Authorization = "Bearer " + token();
  if (options.body) headers["Content-Type"] = "application/json";
  const res = await fetch(API + path, Object.assign({}, options, { headers }));
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
  if (!res.ok) {
    const err = new Error((data && data.error) || res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

/** Builds an element: h("td", {class: "x"}, "text", child...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function time(ms) {
  if (!ms) return "";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function badge(status) {
  return h("span", { class: "badge s-" + status }, String(status).replace(/_/g, " "));
}

function sagaLink(id) {
  return h("a", { href: "#/saga/" + encodeURIComponent(id), class: "mono" }, id);
}

function toast(message, error) {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.className = "toast show" + (error ? " error" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = "toast"; }, 4000);
}

function table(caption, columns, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty || "Nothing here.");
  return h("table", {},
    h("caption", { class: "skip" }, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((cell) => cell instanceof Node && cell.tagName === "TD" ? cell : h("td", {}, cell))))));
}

/** Runs a mutation, reports it, and re-renders. */
async function act(label, fn) {
  try {
    await fn();
    toast(label + ": requested");
  } catch (e) {
    toast(label + " failed: " + e.message, true);
  }
  setTimeout(render, 300);
}

function actionButton(label, fn, extra) {
  return h("button", Object.assign({ type: "button", disabled: !me.admin, title: me.admin ? null : "needs the admin token", onclick: (ev) => { ev.target.disabled = true; act(label, fn); } }, extra || {}), label);
}

// ---------------------------------------------------------------- pages

async function overview() {
  const [counts, stuck, dlq, fleet] = await Promise.all([
    api("/sagas/counts"),
    api("/sagas?status=needs_operator&limit=20"),
    api("/dlq"),
    api("/fleet"),
  ]);
  const cards = Object.entries(counts.counts).map(([s, n]) =>
    h("a", { class: "card", href: "#/sagas?status=" + s, "aria-label": n + " " + s.replace(/_/g, " ") },
      h("div", { class: "n" }, n), h("div", { class: "l" }, badge(s))));
  return [
    h("h2", {}, "Overview"),
    h("section", { "aria-labelledby": "h-counts" }, h("h3", { id: "h-counts" }, "Sagas by status"), h("div", { class: "cards" }, cards)),
    h("section", { "aria-labelledby": "h-stuck" }, h("h3", { id: "h-stuck" }, "Needing an operator"),
      table("Sagas needing an operator", ["Saga", "Definition", "Updated"],
        stuck.items.map((s) => [sagaLink(s.id), s.saga + " v" + s.version, time(s.updated_at)]), "No saga needs an operator.")),
    h("section", { "aria-labelledby": "h-dlq" }, h("h3", { id: "h-dlq" }, "Dead-letter queues"),
      table("Dead-letter depths", ["Queue", "Dead letters"],
        dlq.map((q) => [h("a", { href: "#/dlq/" + encodeURIComponent(q.queue) }, q.queue), String(q.depth)]))),
    h("section", { "aria-labelledby": "h-fleet" }, h("h3", { id: "h-fleet" }, "Fleet"),
      table("Fleet verdicts", ["Service", "Verdict", "Live instances"],
        (fleet.services || []).map((s) => [s.service, badge(s.verdict), String((s.instances || []).filter((i) => !i.stale).length)]),
        "No service known yet.")),
  ];
}

async function sagas(params) {
  const q = new URLSearchParams();
  for (const k of ["status", "saga", "id_prefix", "started_after", "started_before", "cursor"]) {
    if (params.get(k)) q.set(k, params.get(k));
  }
  const page = await api("/sagas?" + q.toString());
  const field = (name, label, input) => h("label", { for: "f-" + name }, label, input);
  const statusSelect = h("select", { id: "f-status", name: "status" },
    h("option", { value: "" }, "any"),
    Object.keys(page.counts).map((s) => h("option", { value: s, selected: params.get("status") === s }, s.replace(/_/g, " "))));
  const dt = (ms) => (ms ? new Date(Number(ms)).toISOString().slice(0, 16) : "");
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter sagas", onsubmit: (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const out = new URLSearchParams();
    for (const [k, v] of f.entries()) {
      if (!v) continue;
      out.set(k, k.startsWith("started_") ? String(Date.parse(v + "Z")) : v);
    }
    location.hash = "#/sagas?" + out.toString();
  } },
    field("status", "Status", statusSelect),
    field("saga", "Definition", h("input", { id: "f-saga", name: "saga", value: params.get("saga") || "" })),
    field("id_prefix", "Id starts with", h("input", { id: "f-id_prefix", name: "id_prefix", value: params.get("id_prefix") || "" })),
    field("started_after", "Started after (UTC)", h("input", { id: "f-started_after", name: "started_after", type: "datetime-local", value: dt(params.get("started_after")) })),
    field("started_before", "Started before (UTC)", h("input", { id: "f-started_before", name: "started_before", type: "datetime-local", value: dt(params.get("started_before")) })),
    h("button", { type: "submit" }, "Filter"));
  const next = new URLSearchParams(q);
  if (page.next_cursor) next.set("cursor", page.next_cursor);
  return [
    h("h2", {}, "Sagas"),
    form,
    table("Sagas", ["Id", "Definition", "Status", "Started", "Updated"],
      page.items.map((s) => [sagaLink(s.id), s.saga + " v" + s.version, badge(s.status), time(s.started_at), time(s.updated_at)]),
      "No saga matches."),
    page.next_cursor ? h("p", {}, h("a", { href: "#/sagas?" + next.toString() }, "Next page")) : null,
  ];
}

const STEP_COLOURS = {
  pending: "#e2e8f0", dispatched: "#bee3f8", retry_wait: "#fefcbf", succeeded: "#c6f6d5", refused: "#fed7d7",
  failed: "#fed7d7", timed_out: "#feebc8", compensating: "#feebc8", compensation_retry_wait: "#fefcbf",
  compensated: "#e9d8fd", compensation_failed: "#fc8181", not_compensable: "#fbd38d",
};

/** The definition's graph as inline SVG; step nodes coloured by `steps[i].status`. */
function graphSvg(def, steps) {
  const NS = "http://www.w3.org/2000/svg";
  const s = (tag, attrs, ...kids) => {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    for (const k of kids) el.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return el;
  };
  const W = 150, H = 46, GX = 40, n = def.nodes.filter((x) => x.kind === "step").length;
  const pos = {};
  for (const node of def.nodes) {
    let col, row;
    switch (node.kind) {
      case "start": col = 0; row = 0; break;
      case "step": col = node.step + 1; row = 0; break;
      case "completed": col = n + 1; row = 0; break;
      case "compensation": col = node.step + 1; row = 1; break;
      case "compensated": col = 0; row = 1; break;
      default: col = 0; row = 2; break;
    }
    pos[node.id] = { x: 10 + col * (W + GX), y: 20 + row * (H + 50) };
  }
  const width = 20 + (n + 2) * (W + GX), height = 20 + 3 * (H + 50);
  const svg = s("svg", { class: "graph", viewBox: `0 0 ${width} ${height}`, width, role: "img", "aria-label": `Graph of ${def.name} v${def.version} with each step's state` });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#5b6475" }))));
  for (const e of def.edges) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    const x1 = a.x + W / 2, y1 = a.y + H / 2, x2 = b.x + W / 2, y2 = b.y + H / 2;
    // Clip the end to the target box's border.
    const dx = x2 - x1, dy = y2 - y1, t = Math.min(Math.abs((W / 2) / (dx || 1e-9)), Math.abs((H / 2) / (dy || 1e-9)));
    const line = s("line", { x1, y1, x2: x2 - dx * t, y2: y2 - dy * t, stroke: "#5b6475", "stroke-width": 1.3, "marker-end": "url(#arrow)" });
    if (e.dotted) line.setAttribute("stroke-dasharray", "4 3");
    svg.append(line);
    if (e.label) svg.append(s("text", { x: (x1 + x2) / 2 + 4, y: (y1 + y2) / 2 - 4, fill: "#5b6475" }, e.label));
  }
  for (const node of def.nodes) {
    const p = pos[node.id];
    let fill = "#edf2f7";
    let state = "";
    if (steps && node.step !== null && node.step !== undefined && steps[node.step]) {
      const st = steps[node.step].status;
      const compStates = ["compensating", "compensation_retry_wait", "compensated", "compensation_failed", "not_compensable"];
      // A compensation node is coloured only once compensation began; a step node always.
      if (node.kind !== "compensation" || compStates.includes(st)) {
        fill = STEP_COLOURS[st] || fill;
        state = st;
      }
    }
    const g = s("g", { "data-node": node.id, "data-state": state });
    g.append(s("title", {}, node.label.join(" — ") + (state ? ` (${state.replace(/_/g, " ")})` : "")));
    g.append(s("rect", { x: p.x, y: p.y, width: W, height: H, rx: node.kind === "step" || node.kind === "compensation" ? 4 : 22, fill, stroke: "#4a5568" }));
    node.label.forEach((line, i) => g.append(s("text", { x: p.x + 8, y: p.y + 18 + i * 15 }, line.length > 22 ? line.slice(0, 21) + "…" : line)));
    svg.append(g);
  }
  return svg;
}

function legend() {
  const NS = "http://www.w3.org/2000/svg";
  const swatch = (colour) => {
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("width", "12");
    svg.setAttribute("height", "12");
    const rect = document.createElementNS(NS, "rect");
    for (const [k, v] of Object.entries({ width: 12, height: 12, rx: 2, fill: colour, stroke: "#4a5568" })) rect.setAttribute(k, v);
    svg.append(rect);
    return svg;
  };
  return h("div", { class: "legend", "aria-hidden": "true" },
    Object.entries(STEP_COLOURS).map(([k, c]) => h("span", {}, swatch(c), " " + k.replace(/_/g, " "))));
}

async function saga(id) {
  const s = await api("/sagas/" + encodeURIComponent(id));
  let def = null;
  try { def = await api(`/definitions/${encodeURIComponent(s.saga)}/${s.version}`); } catch (_) { def = null; }
  const actions = h("div", { class: "actions" },
    s.status === "needs_operator" ? actionButton("Resume", () => api(`/sagas/${encodeURIComponent(id)}/resume`, { method: "POST" }), { id: "resume" }) : null,
    s.status === "running" ? actionButton("Cancel", () => api(`/sagas/${encodeURIComponent(id)}/cancel`, { method: "POST" }), { id: "cancel", class: "danger" }) : null);
  return [
    h("h2", {}, "Saga ", h("span", { class: "mono" }, s.id), " ", badge(s.status)),
    h("dl", { class: "facts" },
      h("dt", {}, "Definition"), h("dd", {}, h("a", { href: `#/definition/${encodeURIComponent(s.saga)}/${s.version}` }, `${s.saga} v${s.version}`)),
      h("dt", {}, "Reason"), h("dd", {}, s.reason || "—"),
      h("dt", {}, "Started"), h("dd", {}, time(s.started_at)),
      h("dt", {}, "Updated"), h("dd", {}, time(s.updated_at)),
      h("dt", {}, "Deadline"), h("dd", {}, time(s.deadline_at)),
      h("dt", {}, "Trace id"), h("dd", { class: "mono" }, s.trace_id || "—")),
    actions,
    h("h3", {}, "Graph"),
    def ? [graphSvg(def, s.steps), legend()] : h("p", { class: "empty" }, "Definition not loaded."),
    h("h3", {}, "Steps"),
    table("Steps", ["#", "Step", "Status", "Attempts", "Worker", "Started", "Finished", "Output / error"],
      s.steps.map((st) => [String(st.index), st.name, badge(st.status),
        `${st.attempts} / ${st.compensation_attempts}`,
        h("span", { class: "mono" }, st.worker ? `${st.worker.instance} [${st.worker.fingerprint.slice(0, 12)}]` : ""),
        time(st.started_at), time(st.finished_at),
        h("span", { class: "mono" }, st.error ? st.error : st.output ? JSON.stringify(st.output) : "")])),
    h("h3", {}, "History"),
    h("ol", { class: "timeline", "aria-label": "History" },
      s.history.map((e) => h("li", { class: e.event }, h("time", { datetime: new Date(e.at).toISOString() }, time(e.at)), h("strong", {}, e.event), " ", e.note))),
    h("h3", {}, "Input"),
    h("pre", { tabindex: "0", "aria-label": "Input JSON" }, JSON.stringify(s.input, null, 2)),
  ];
}

async function operator() {
  const [stuck, running] = await Promise.all([api("/sagas?status=needs_operator&limit=100"), api("/sagas?status=running&limit=100")]);
  const row = (s, button) => [sagaLink(s.id), s.saga + " v" + s.version, time(s.updated_at), h("div", { class: "actions" }, button)];
  return [
    h("h2", {}, "Needs operator"),
    h("p", {}, "Resume retries a saga's failed compensation; cancel makes a running saga compensate now. Both are recorded in the saga's history and the audit log."),
    h("h3", {}, "Compensation failed"),
    table("Sagas needing an operator", ["Saga", "Definition", "Updated", "Action"],
      stuck.items.map((s) => row(s, actionButton("Resume", () => api(`/sagas/${encodeURIComponent(s.id)}/resume`, { method: "POST" }), { "aria-label": "Resume " + s.id }))),
      "No saga needs an operator."),
    h("h3", {}, "Running"),
    table("Running sagas", ["Saga", "Definition", "Updated", "Action"],
      running.items.map((s) => row(s, actionButton("Cancel", () => api(`/sagas/${encodeURIComponent(s.id)}/cancel`, { method: "POST" }), { class: "danger", "aria-label": "Cancel " + s.id }))),
      "No saga is running."),
  ];
}

async function dlq(queue) {
  const depths = await api("/dlq");
  const out = [
    h("h2", {}, "Dead letters"),
    table("Dead-letter queues", ["Queue", "Dead letters", ""],
      depths.map((q) => [h("a", { href: "#/dlq/" + encodeURIComponent(q.queue) }, q.queue), String(q.depth),
        q.depth > 0 ? actionButton("Redrive all", () => api(`/dlq/${encodeURIComponent(q.queue)}/redrive`, { method: "POST" }), { class: "secondary", "aria-label": "Redrive all of " + q.queue }) : ""])),
  ];
  if (!queue) return out;
  const messages = await api(`/dlq/${encodeURIComponent(queue)}/messages`);
  out.push(h("h3", {}, "Messages of ", h("span", { class: "mono" }, queue)));
  out.push(table("Dead-lettered messages of " + queue, ["Message", "Reason", "Dead-lettered", "Body", "Action"],
    messages.map((m) => {
      const reasonId = "reason-" + m.message_id.replace(/[^a-zA-Z0-9_-]/g, "_");
      const del = h("form", { class: "actions", onsubmit: (ev) => {
        ev.preventDefault();
        const reason = ev.target.querySelector("input").value.trim();
        if (!reason) { toast("Say why before deleting", true); return; }
        act("Delete", () => api(`/dlq/${encodeURIComponent(queue)}/messages/${encodeURIComponent(m.message_id)}?reason=${encodeURIComponent(reason)}`, { method: "DELETE" }));
      } },
        h("label", { for: reasonId, class: "skip" }, "Reason to delete " + m.message_id),
        h("input", { id: reasonId, placeholder: "reason to delete", size: 14 }),
        h("button", { type: "submit", class: "danger", disabled: !me.admin }, "Delete"));
      return [h("span", { class: "mono" }, m.message_id), m.reason || "(none recorded)", time(m.sent_at),
        h("span", { class: "mono" }, m.body.length > 120 ? m.body.slice(0, 120) + "…" : m.body),
        h("div", { class: "actions" },
          actionButton("Redrive", () => api(`/dlq/${encodeURIComponent(queue)}/messages/${encodeURIComponent(m.message_id)}/redrive`, { method: "POST" }), { "aria-label": "Redrive " + m.message_id, "data-redrive": m.message_id }),
          del)];
    }), "This dead-letter queue is empty."));
  return out;
}

async function fleet() {
  const f = await api("/fleet");
  const out = [h("h2", {}, "Fleet")];
  if (!(f.services || []).length) out.push(h("p", { class: "empty" }, "No service known yet."));
  for (const s of f.services || []) {
    out.push(h("section", { "aria-label": "Service " + s.service },
      h("h3", {}, s.service, " ", badge(s.verdict), " ", h("small", {}, `mode ${s.mode}`)),
      (s.reasons || []).map((r) => h("p", { class: "diff" }, r)),
      s.blocked ? h("p", { class: "diff" }, "No eligible worker: " + s.blocked) : null,
      table("Fingerprints of " + s.service, ["Fingerprint", "Instances", "Conforming", "Version", "Git", "Config hash", "Contracts"],
        (s.fingerprints || []).map((g) => {
          const p = g.parts || {};
          return [h("span", { class: "mono" }, g.fingerprint.slice(0, 12)), String((g.instances || []).length),
            g.conforming ? "yes" : h("span", { class: "diff" }, "no"), p.version || "?", (p.git_sha || "?").slice(0, 8),
            h("span", { class: "mono" }, (p.config_hash || "?").slice(0, 12)), (p.contracts || []).join(", ")];
        }), "No fingerprint reported."),
      table("Instances of " + s.service, ["Instance", "Host", "Fingerprint", "In flight", "Last heartbeat", "Flags"],
        (s.instances || []).map((i) => [i.instance, i.host, h("span", { class: "mono" }, i.fingerprint.slice(0, 12)), String(i.in_flight), time(i.last_seen),
          [i.stale ? "stale" : "", i.quarantined ? "QUARANTINED" : "", !i.conforming && !i.stale ? "not conforming" : ""].filter(Boolean).join(", ")]),
        "No instance.")));
  }
  return out;
}

async function definitions() {
  const defs = await api("/definitions");
  return [
    h("h2", {}, "Definitions"),
    table("Definitions", ["Definition", "Steps", "Unfinished sagas"],
      defs.map((d) => [h("a", { href: `#/definition/${encodeURIComponent(d.name)}/${d.version}` }, `${d.name} v${d.version}`), d.steps.join(" → "), String(d.unfinished)])),
  ];
}

async function definition(name, version) {
  const d = await api(`/definitions/${encodeURIComponent(name)}/${version}`);
  return [h("h2", {}, `${d.name} v${d.version}`), d.description ? h("p", {}, d.description) : null, graphSvg(d, null),
    h("h3", {}, "YAML"), h("pre", { tabindex: "0", "aria-label": "Definition YAML" }, d.yaml)];
}

// ---------------------------------------------------------------- routing

async function render() {
  const seq = ++renderSeq;
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = (path || "/").split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  const pages = {
    undefined: ["overview", () => overview()],
    sagas: ["sagas", () => sagas(params)],
    saga: ["sagas", () => saga(parts[1])],
    operator: ["operator", () => operator()],
    dlq: ["dlq", () => dlq(parts[1])],
    fleet: ["fleet", () => fleet()],
    definitions: ["definitions", () => definitions()],
    definition: ["definitions", () => definition(parts[1], parts[2])],
  };
  const [nav, page] = pages[parts[0]] || pages.undefined;
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.dataset.page === nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  let content;
  try {
    content = await page();
  } catch (e) {
    content = [h("h2", {}, "Cannot load this page"), h("p", { role: "alert" }, e.status === 401 ? "The API needs a token: type it above." : e.message)];
  }
  if (seq !== renderSeq) return; // a newer render started meanwhile
  const m = main();
  const focused = document.activeElement && document.activeElement.id;
  m.replaceChildren(...[content].flat(3).filter(Boolean));
  m.dataset.page = nav;
  m.dataset.ready = "1";
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
  document.title = (m.querySelector("h2") ? m.querySelector("h2").textContent + " — " : "") + "sqsaga console";
}

async function whoami() {
  try {
    me = await api("/whoami");
    document.getElementById("whoami").textContent = "as " + me.name + (me.admin ? "" : " (read-only)");
  } catch (e) {
    me = { name: "?", admin: false };
    document.getElementById("whoami").textContent = e.status === 401 ? "token needed" : "";
  }
}

// ---------------------------------------------------------------- live updates

let liveAbort = null;
async function live() {
  if (liveAbort) liveAbort.abort();
  liveAbort = new AbortController();
  const status = document.getElementById("live");
  const headers = { Accept: "text/event-stream" };
  if (token()) headers.Authorization = "Bearer " + token();
  try {
    const res = await fetch(API + "/events", { headers, signal: liveAbort.signal });
    if (!res.ok || !res.body) throw new Error(res.statusText);
    status.textContent = "live";
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = (block.match(/^event: ?(.*)$/m) || [])[1];
        const data = (block.match(/^data: ?(.*)$/m) || [])[1];
        if (event === "saga" || event === "resync") onChange(event, data);
      }
    }
  } catch (e) {
    if (e.name === "AbortError") return;
  }
  status.textContent = "reconnecting…";
  setTimeout(live, 2000);
}

let changeTimer = null;
function onChange(event, data) {
  const status = document.getElementById("live");
  try {
    const row = JSON.parse(data);
    status.textContent = `live · ${row.id}: ${row.status.replace(/_/g, " ")}`;
  } catch (_) {
    status.textContent = "live";
  }
  // Re-render at most every half second, not while the operator types.
  clearTimeout(changeTimer);
  changeTimer = setTimeout(() => {
    const typing = document.activeElement && ["INPUT", "SELECT"].includes(document.activeElement.tagName);
    if (!typing) render();
  }, 500);
}

document.addEventListener("DOMContentLoaded", async () => {
  const form = document.getElementById("token-form");
  document.getElementById("token").value = token();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("sqsaga-token", document.getElementById("token").value.trim());
    await whoami();
    live();
    render();
  });
  window.addEventListener("hashchange", () => { render().then(() => main().focus()); });
  await whoami();
  live();
  render();
});
