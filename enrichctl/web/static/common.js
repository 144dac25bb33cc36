// What both pages share (loaded before app.js and symbol.js): the API's prefix, elements built
// from server text through textContent only, instants as UTC, and reading the JSON API.
"use strict";

const API = "/api/v1/enrichment";

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : "—";
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const doc = await response.json();
  // /health answers 503 with its document when unhealthy: that is data, not an error.
  if (!response.ok && !(path.endsWith("/health") && response.status === 503)) {
    throw new Error(doc.detail || `${response.status} ${response.statusText}`);
  }
  return doc;
}
