// What the captions report (report.js) and the eval page (eval.js) share. Every text from a
// ledger or a manifest is put in the page with textContent, never as HTML: a caption that says
// <script> or <img onerror=...> is shown as those characters and never runs. Names from the data
// are never object keys here: counts come as [name, count] pairs, and maps are `Map`s (an object
// would take a flag named `__proto__` as its prototype).
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

// `pairs`: [[name, count], ...] as the data files hold them.
function counterList(pairs, empty) {
  if (!pairs || !pairs.length) return el("p", { class: "muted", text: empty });
  const list = el("ul");
  for (const [name, count] of pairs) list.append(el("li", { text: `${name}: ${count}` }));
  return list;
}

// A time in seconds as m:ss; a field of another type comes as its text (page_fields.py) and is shown so.
function seconds(value) {
  if (typeof value === "string") return value;
  if (typeof value !== "number") return "";
  const whole = Math.round(Math.abs(value));
  return `${value < 0 ? "-" : ""}${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
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

// An error as the pages show it: its type (`unknown` when it names none), then its message.
function errorText(error) {
  return error.message ? `${error.type}: ${error.message}` : error.type;
}

// JSON text from the data (a line's other fields, the run's stats) laid out to read; the text as it
// is should it not parse. JSON.parse keeps a key named `__proto__` as a key.
function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
