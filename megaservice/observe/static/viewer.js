// The trace viewer: the list of recent traces (GET /api/traces), one trace's waterfall (GET /api/traces/{id}).
// Plain DOM, no framework; every text from a span goes in through textContent.
"use strict";

const PALETTE = ["#3b6fd8", "#2e9d6a", "#b5528f", "#c47a16", "#6a5acd", "#1f8fa3", "#8a6d3b", "#d14b4b", "#4f7a28"];
const colors = new Map();
let timer = null;

function color(service) {
  if (!colors.has(service)) colors.set(service, PALETTE[colors.size % PALETTE.length]);
  return colors.get(service);
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function chip(service) {
  const node = el("span", { class: "chip", text: service });
  node.style.background = color(service);
  return node;
}

function ms(value) {
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(1)} ms`;
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: ${response.status} ${(await response.json()).error || ""}`);
  return response.json();
}

async function showList() {
  const errorsOnly = document.getElementById("errors-only").checked;
  const data = await getJSON(`/api/traces?limit=200${errorsOnly ? "&errors=1" : ""}`);
  document.getElementById("stats").textContent =
    `${data.held.traces} traces, ${data.held.spans} spans held (keeps the last ${data.limits.max_traces} traces, ` +
    `${data.limits.max_spans} spans); ${data.received_spans} spans received`;
  const body = document.querySelector("#traces tbody");
  body.replaceChildren();
  for (const trace of data.traces) {
    const status = trace.errors
      ? el("span", { class: "err", text: `${trace.errors} error${trace.errors > 1 ? "s" : ""}` })
      : el("span", { class: "ok", text: "ok" });
    const services = el("td", {}, ...trace.services.map(chip));
    const row = el(
      "tr",
      { "data-testid": "trace-row", "data-trace": trace.trace_id },
      el("td", { text: new Date(trace.start_unix_ms).toLocaleTimeString() }),
      el("td", { text: trace.root }),
      services,
      el("td", { class: "num", text: ms(trace.duration_ms) }),
      el("td", { class: "num", text: String(trace.spans) }),
      el("td", {}, status),
    );
    row.addEventListener("click", () => { location.hash = `trace=${trace.trace_id}`; });
    body.append(row);
  }
  document.getElementById("otlp-url").textContent = `${location.origin}/v1/traces`;
  document.getElementById("empty").hidden = data.traces.length > 0;
}

function keyText(keys) {
  return Object.entries(keys).map(([key, value]) => `${key.replace(/^(megaservice|gen_ai)\./, "")}=${value}`).join("  ");
}

async function showTrace(id) {
  const trace = await getJSON(`/api/traces/${id}`);
  document.getElementById("trace-title").textContent = `${trace.root}  (${trace.root_service})`;
  document.getElementById("trace-meta").textContent =
    `trace ${trace.trace_id} · ${ms(trace.duration_ms)} · ${trace.span_count} spans · ` +
    `${trace.services.join(", ")}${trace.errors ? ` · ${trace.errors} errors` : ""}` +
    `${trace.dropped_spans ? ` · ${trace.dropped_spans} spans dropped` : ""}`;
  const total = Math.max(trace.duration_ms, 0.001);
  const rows = trace.spans.map((span) => {
    const label = el(
      "div",
      { class: "label" },
      chip(span.service),
      el("span", { class: span.status === "error" ? "name err" : "name", text: span.name }),
      el("span", { class: "keys", text: keyText(span.key_attributes) }),
    );
    label.style.paddingLeft = `${0.5 + span.depth * 1.1}em`;
    const bar = el("div", { class: span.status === "error" ? "bar error" : "bar" });
    bar.style.left = `${(100 * span.offset_ms) / total}%`;
    bar.style.width = `${(100 * span.duration_ms) / total}%`;
    bar.style.background = color(span.service);
    const duration = el("span", { class: "dur", text: `+${ms(span.offset_ms)}  ${ms(span.duration_ms)}` });
    duration.style.left = `calc(${(100 * (span.offset_ms + span.duration_ms)) / total}% + 4px)`;
    const row = el("div", { class: "row", "data-testid": "span-row", title: span.name }, label, el("div", { class: "track" }, bar, duration));
    row.addEventListener("click", () => {
      const open = row.querySelector(".detail");
      if (open) { open.remove(); return; }
      const detail = { kind: span.kind, status: span.status, status_message: span.status_message || undefined,
        span_id: span.span_id, parent_id: span.parent_id, attributes: span.attributes };
      row.append(el("div", { class: "detail", text: JSON.stringify(detail, null, 2) }));
    });
    return row;
  });
  document.getElementById("waterfall").replaceChildren(...rows);
}

async function route() {
  const match = /^#trace=([0-9a-f]{32})$/.exec(location.hash);
  document.getElementById("list-view").hidden = Boolean(match);
  document.getElementById("trace-view").hidden = !match;
  clearTimeout(timer);
  try {
    if (match) {
      await showTrace(match[1]);
    } else {
      await showList();
    }
  } catch (error) {
    document.getElementById("stats").textContent = String(error);
  }
  if (!match && document.getElementById("live").checked) timer = setTimeout(route, 2000);
}

window.addEventListener("hashchange", route);
document.getElementById("errors-only").addEventListener("change", route);
document.getElementById("live").addEventListener("change", route);
route();
