// What the captions report (report.js) and the eval page (eval.js) share. Every text from a
// ledger or a manifest is put in the page with textContent, never as HTML: a caption that says
// <script> or <img onerror=...> is shown as those characters and never runs.
"use strict";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function counterList(counts, empty) {
  const entries = Object.entries(counts || {});
  if (!entries.length) return el("p", { class: "muted", text: empty });
  const list = el("ul");
  for (const [name, count] of entries) list.append(el("li", { text: `${name}: ${count}` }));
  return list;
}

function seconds(value) {
  if (typeof value !== "number") return "";
  const whole = Math.round(value);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

// The contact sheet of the frames the model saw (`item`: the video or one segment), linked to its
// full size; a placeholder when the run wrote none or the file is gone.
function showSheet(cell, item) {
  const placeholder = (text) => el("div", { class: "placeholder", text });
  if (!item.thumbnail) {
    cell.replaceChildren(placeholder(item.thumbnail_missing ? "thumbnail missing" : "no thumbnail"));
    return;
  }
  const image = el("img", { class: "thumb", src: item.thumbnail, alt: "frames the model saw", loading: "lazy" });
  image.onerror = () => cell.replaceChildren(placeholder("thumbnail missing"));
  cell.replaceChildren(el("a", { href: item.thumbnail, class: "sheet-link" }, image));
}
