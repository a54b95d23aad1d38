// The evaluation page (engines/eval/eval_report.py writes data/eval.js, which this reads):
// each prediction beside its reference, with the frames the model saw and the caption's scores.
"use strict";

const ATTRIBUTES = ["colour", "shape", "motion"];
const PER_VIEW = 100;
let evaluation = null;
let at = 0;

window.vlmcapEval = (data) => { evaluation = data; };

function card(label, value) {
  return el("div", { class: "card", "data-score": label }, el("b", { text: String(value) }), label);
}

function percent(share) { return `${(100 * share).toFixed(1)}%`; }

function renderScores() {
  const m = evaluation.metrics;
  document.title = `${evaluation.title} · vlmcap evaluation`;
  document.getElementById("title").textContent = evaluation.title;
  document.getElementById("source").textContent = `${evaluation.manifest} · bundle ${m.bundle} · built ${evaluation.built_at}`;
  const cards = [["scored", m.n], ["failed", m.failed], ["chrF++", m["chrf++"] ?? "–"], ["CIDEr-D", m.cider_d ?? "–"]];
  cards.push(["exact match", m.exact_match === undefined ? "–" : percent(m.exact_match)]);
  document.getElementById("scores").replaceChildren(...cards.map(([label, value]) => card(label, value)));
  // The metrics' keys are vlmcap.metrics.captions' own names, never a manifest's or a ledger's.
  const attributes = Object.entries(m.attribute_accuracy || {}).map(([k, v]) => [k, percent(v)]);
  document.getElementById("attributes").replaceChildren(counterList(attributes, "the references name no attributes"));
  const segments = m.segments_reference === undefined ? [] : [
    ["cut by", m.segments],
    ["reference", m.segments_reference],
    ["predicted", m.segments_predicted],
    ["boundary recall", m.boundary_recall === null ? "n/a" : m.boundary_recall],
  ];
  document.getElementById("segments").replaceChildren(counterList(segments, "whole videos"));
  document.getElementById("engines").replaceChildren(counterList(Object.entries(m.engines || {}), "none"));
}

function wrongAttributes(record) {
  const hits = record.scores && record.scores.attributes;
  return hits ? ATTRIBUTES.filter((key) => !hits[key]) : [];
}

function shownRecords() {
  const which = document.getElementById("which").value;
  const needle = document.getElementById("search").value.trim().toLowerCase();
  let records = evaluation.records.filter((r) => {
    if (which === "error" && r.status === "ok") return false;
    if (which === "wrong" && !wrongAttributes(r).length) return false;
    if (ATTRIBUTES.includes(which) && !wrongAttributes(r).includes(which)) return false;
    if (!needle) return true;
    return [r.video, r.reference, r.caption].some((text) => (text || "").toLowerCase().includes(needle));
  });
  if (document.getElementById("order").value === "worst") {
    const score = (r) => (r.scores ? r.scores["chrf++"] : -1);
    records = [...records].sort((a, b) => score(a) - score(b));
  }
  return records;
}

function row(record) {
  const tr = el("tr", { class: record.status === "ok" ? "ok" : "error", "data-video": record.video });
  const sheet = el("td", { class: "sheet" });
  showSheet(sheet, record);
  const name = record.url ? el("a", { href: record.url, text: record.video }) : el("span", { text: record.video });
  const where = el("td", {}, name);
  if (record.start_s !== undefined) where.append(el("div", { class: "muted", text: `${seconds(record.start_s)}-${seconds(record.end_s)}` }));
  const prediction = el("td", { class: "caption prediction" });
  if (record.status === "ok") prediction.append(el("div", { class: "text", text: record.caption || "" }));
  else prediction.append(el("div", { class: "text", text: record.error ? errorText(record.error) : "failed" }));
  const chrf = el("td", { class: "chrf", text: record.scores ? record.scores["chrf++"].toFixed(1) : "" });
  const attributes = el("td", { class: "attributes" });
  const hits = record.scores && record.scores.attributes;
  for (const key of hits ? ATTRIBUTES : []) {
    attributes.append(el("span", { class: hits[key] ? "hit" : "miss", "data-attribute": key, text: `${hits[key] ? "✓" : "✗"} ${key}` }), " ");
  }
  tr.append(sheet, where, el("td", { class: "caption reference", text: record.reference }), prediction, chrf, attributes);
  return tr;
}

function render() {
  const records = shownRecords();
  if (at >= records.length) at = 0;
  const view = records.slice(at, at + PER_VIEW);
  document.querySelector("#records tbody").replaceChildren(...view.map(row));
  document.getElementById("shown").textContent = `${records.length} of ${evaluation.records.length} shown`;
  document.getElementById("position").textContent = records.length ? `${at + 1}-${at + view.length} of ${records.length}` : "none";
  document.getElementById("prev").disabled = at === 0;
  document.getElementById("next").disabled = at + PER_VIEW >= records.length;
}

function refilter() { at = 0; render(); }

document.addEventListener("DOMContentLoaded", () => {
  if (!evaluation) {
    document.body.prepend(el("p", { class: "status-error", text: "data/eval.js did not load" }));
    return;
  }
  renderScores();
  for (const id of ["which", "order"]) document.getElementById(id).addEventListener("change", refilter);
  let typing;
  document.getElementById("search").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(refilter, 200); });
  document.getElementById("filters").addEventListener("submit", (event) => { event.preventDefault(); refilter(); });
  document.getElementById("prev").addEventListener("click", () => { at = Math.max(0, at - PER_VIEW); render(); });
  document.getElementById("next").addEventListener("click", () => { at += PER_VIEW; render(); });
  render();
});
