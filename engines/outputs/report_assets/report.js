// The captions report (engines/outputs/report.py writes the data/ files this reads).
// Every text from the ledger is put in the page with textContent, never as HTML: a caption that
// says <script> or <img onerror=...> is shown as those characters and never runs.
"use strict";

const PER_VIEW = 50;
const state = {
  summary: null, index: null, pages: new Map(), waiting: new Map(), matches: [], at: 0, run: 0,
  flagged: [], // per flag (its index in the index's flags), the set of videos that carry it
  anyFlag: new Set(), // the videos with any flag
};

window.vlmcapSummary = (data) => { state.summary = data; };
window.vlmcapIndex = (data) => {
  state.index = data;
  state.flagged = data.flags.map(([, videos]) => new Set(videos));
  state.anyFlag = new Set(data.flags.flatMap(([, videos]) => videos));
};
window.vlmcapPage = (data) => {
  state.pages.set(data.page, data.records);
  const done = state.waiting.get(data.page);
  if (done) done.resolve(data.records);
};

function pageName(number) { return `data/page-${String(number).padStart(5, "0")}.js`; }

function loadPage(number) {
  if (state.pages.has(number)) return Promise.resolve(state.pages.get(number));
  if (state.waiting.has(number)) return state.waiting.get(number).promise;
  let resolve, reject;
  const promise = new Promise((ok, fail) => { resolve = ok; reject = fail; });
  state.waiting.set(number, { promise, resolve });
  const script = document.createElement("script");
  script.src = pageName(number);
  script.onerror = () => reject(new Error(`${pageName(number)} is missing`));
  document.head.appendChild(script);
  return promise;
}

function renderSummary() {
  const s = state.summary;
  document.title = `${s.title} · vlmcap captions report`;
  document.getElementById("title").textContent = s.title;
  document.getElementById("source").textContent = `${s.input} · built ${s.built_at}`;
  const counts = document.getElementById("counts");
  const total = s.statuses.reduce((sum, [, count]) => sum + count, 0);
  const cards = [["videos", total], ...s.statuses];
  cards.push(["flagged", state.anyFlag.size]);
  if (s.segments) cards.push(["segments", s.segments]);
  if (s.videos_per_hour) cards.push(["videos / hour", s.videos_per_hour]);
  cards.push(["hours of video", (s.video_seconds / 3600).toFixed(2)]);
  for (const [name, value] of cards) {
    counts.append(el("div", { class: "card", "data-count": name }, el("b", { text: String(value) }), name));
  }
  const errors = document.getElementById("errors");
  if (!s.errors.length) errors.append(el("p", { class: "muted", text: "none" }));
  for (const [type, count, paths] of s.errors) {
    const examples = el("ul");
    for (const path of paths) examples.append(el("li", { text: path }));
    errors.append(el("details", { "data-error": type }, el("summary", { text: `${type}: ${count}` }), examples));
  }
  const flags = document.getElementById("flags");
  flags.append(counterList(s.flags, "no video flagged"));
  if (s.segment_flags.length) flags.append(el("p", { text: "segments:" }), counterList(s.segment_flags, ""));
  const seen = document.getElementById("seen");
  for (const [label, counter] of [["engines", s.engines], ["bundles", s.bundles], ["prompts", s.prompts], ["decoders", s.decoders]]) {
    seen.append(el("p", { text: label }), counterList(counter, "none recorded"));
  }
  const ledger = s.ledger;
  const lines = [
    `${ledger.lines} lines, ${ledger.videos} videos (their latest lines), ${ledger.duplicates} superseded`,
    `${ledger.foreign_lines} foreign lines${ledger.foreign_at.length ? ` (lines ${ledger.foreign_at.join(", ")}${ledger.foreign_lines > ledger.foreign_at.length ? ", ..." : ""})` : ""}`,
    ledger.torn_at === null ? "no torn line" : `a torn last line: line ${ledger.torn_at}`,
  ];
  const box = document.getElementById("ledger");
  for (const line of lines) box.append(el("p", { text: line }));
  if (s.run_stats !== null) box.append(el("pre", { text: prettyJson(s.run_stats) }));
}

function fillFilters() {
  const status = document.getElementById("status-filter");
  state.index.statuses.forEach((name, i) => status.append(el("option", { value: String(i), text: name })));
  const flag = document.getElementById("flag-filter");
  state.index.flags.forEach(([name], i) => flag.append(el("option", { value: String(i), text: name })));
}

function matchesText(record, needle) {
  const texts = [record.video, record.caption, record.error && record.error.message, record.error && record.error.type];
  for (const segment of record.segments) texts.push(segment.caption);
  return texts.some((text) => typeof text === "string" && text.toLowerCase().includes(needle));
}

async function applyFilters() {
  const run = ++state.run;
  const status = document.getElementById("status-filter").value;
  const flag = document.getElementById("flag-filter").value;
  const needle = document.getElementById("search").value.trim().toLowerCase();
  const statuses = state.index.status;
  const withFlag = flag === "" ? null : flag === "*" ? state.anyFlag : state.flagged[Number(flag)];
  let ids = [];
  for (let i = 0; i < statuses.length; i++) {
    if (status !== "" && statuses[i] !== Number(status)) continue;
    if (withFlag && !withFlag.has(i)) continue;
    ids.push(i);
  }
  if (needle) {
    const kept = [];
    const size = state.index.page_size;
    for (let p = 1; p <= state.index.pages; p++) {
      show(`searching page ${p} of ${state.index.pages}`);
      const records = await loadPage(p);
      if (run !== state.run) return;
      const first = (p - 1) * size;
      for (const id of ids) {
        if (id >= first && id < first + size && matchesText(records[id - first], needle)) kept.push(id);
      }
    }
    ids = kept;
  }
  state.matches = ids;
  state.at = 0;
  await renderView(run);
}

function show(text) { document.getElementById("shown").textContent = text; }

async function renderView(run) {
  const ids = state.matches.slice(state.at, state.at + PER_VIEW);
  const size = state.index.page_size;
  const needed = [...new Set(ids.map((id) => Math.floor(id / size) + 1))];
  await Promise.all(needed.map(loadPage));
  if (run !== state.run) return;
  const body = document.querySelector("#records tbody");
  body.replaceChildren(...ids.map((id) => row(state.pages.get(Math.floor(id / size) + 1)[id % size])));
  const total = state.matches.length;
  show(`${total} of ${state.index.status.length} videos`);
  document.getElementById("position").textContent = total ? `${state.at + 1}-${state.at + ids.length} of ${total}` : "none";
  document.getElementById("prev").disabled = state.at === 0;
  document.getElementById("next").disabled = state.at + PER_VIEW >= total;
}

function row(record) {
  const tr = el("tr", { class: record.status === "ok" ? "ok" : "error", "data-video": record.video });
  const sheet = el("td", { class: "sheet" });
  showSheet(sheet, record);
  tr.append(sheet);
  const name = record.url ? el("a", { href: record.url, text: record.video }) : el("span", { text: record.video });
  tr.append(el("td", {}, name, el("div", { class: `status-${record.status}`, text: record.status })));
  const cell = el("td", { class: "caption" });
  if (record.caption !== null) cell.append(el("div", { class: "text", text: record.caption }));
  if (record.error) cell.append(el("div", { class: "text", text: errorText(record.error) }));
  for (const flag of record.flags) cell.append(el("span", { class: "flag", text: flag }));
  if (record.segments.length) cell.append(timeline(record, sheet));
  for (const [key, label] of [["srt", "SRT"], ["vtt", "WebVTT"]]) {
    if (record[key]) cell.append(el("a", { href: record[key], class: "sidecar", text: label }), " ");
  }
  const more = el("details", { class: "provenance" }, el("summary", { text: "provenance and the line's other fields" }));
  more.addEventListener("toggle", () => {
    if (more.open && more.children.length === 1) more.append(el("pre", { text: prettyJson(record.more) }));
  });
  cell.append(more);
  tr.append(cell, el("td", { text: seconds(record.duration_s) }), el("td", { text: record.decoder || "" }));
  return tr;
}

function timeline(record, sheet) {
  const box = el("div", { class: "segment-timeline" });
  const bar = el("div", { class: "timeline", role: "group", "aria-label": "segments" });
  const list = el("ol", { class: "segments" });
  // Times of another type come as text (page_fields.py): shown in the list, no length on the bar.
  const number = (value) => (typeof value === "number" ? value : NaN);
  const ends = record.segments.map((s) => number(s.end_s)).filter(Number.isFinite);
  const total = number(record.duration_s) > 0 ? record.duration_s : Math.max(...ends, 1);
  record.segments.forEach((segment, i) => {
    const span = `${seconds(segment.start_s)}-${seconds(segment.end_s)}`;
    const button = el("button", { type: "button", title: span, "aria-pressed": "false", "data-segment": String(i) });
    const share = (number(segment.end_s) - number(segment.start_s)) / total;
    button.style.flexGrow = String(share > 0.001 ? share : 0.001);
    if (segment.flags.length) button.classList.add("flagged");
    const item = el("li", { "data-segment": String(i) }, `${span} `, el("span", { class: "text", text: segment.caption || "" }));
    for (const flag of segment.flags) item.append(" ", el("span", { class: "flag", text: flag }));
    button.addEventListener("click", () => {
      for (const other of bar.children) other.setAttribute("aria-pressed", "false");
      for (const other of list.children) other.classList.remove("current");
      button.setAttribute("aria-pressed", "true");
      item.classList.add("current");
      showSheet(sheet, segment);
    });
    bar.append(button);
    list.append(item);
  });
  box.append(bar, list);
  return box;
}

document.addEventListener("DOMContentLoaded", () => {
  if (!state.summary || !state.index) {
    document.body.prepend(el("p", { class: "status-error", text: "data/summary.js or data/index.js did not load" }));
    return;
  }
  renderSummary();
  fillFilters();
  let typing;
  document.getElementById("search").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(applyFilters, 250); });
  document.getElementById("filters").addEventListener("submit", (event) => { event.preventDefault(); applyFilters(); });
  document.getElementById("status-filter").addEventListener("change", applyFilters);
  document.getElementById("flag-filter").addEventListener("change", applyFilters);
  document.getElementById("prev").addEventListener("click", () => { state.at = Math.max(0, state.at - PER_VIEW); renderView(state.run); });
  document.getElementById("next").addEventListener("click", () => { state.at += PER_VIEW; renderView(state.run); });
  applyFilters();
});
