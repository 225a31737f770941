// Helpers shared by the drawing page and the history page: API calls, the probability bar chart and the
// 28x28 image the model saw. Plain browser JavaScript, no libraries, so the page needs no network but ours.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

/** Call the service's JSON API; throws an Error carrying the server's {"error": {"message"}} text. */
async function api(path, options = {}) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    error.code = body && body.error ? body.error.code : "http_error";
    throw error;
  }
  return body;
}

/** Names of the served models, from the model listing; falls back to letting the server pick its default. */
async function servedModels() {
  try {
    const body = await api("/api/models");
    const models = body.models || [];
    const names = models.map((m) => (typeof m === "string" ? m : m.name)).filter(Boolean);
    return names.length ? [...new Set(names)] : [null];
  } catch (err) {
    return [null];
  }
}

/** Pixels as rows of numbers (0..1 floats or 0..255 ints), a flat list, or base64 of 784 bytes -> Float32Array 0..1. */
function normalizePixels(pixels) {
  let flat;
  if (typeof pixels === "string") {
    const raw = atob(pixels);
    flat = Array.from(raw, (c) => c.charCodeAt(0));
  } else {
    flat = pixels.flat ? pixels.flat() : Array.from(pixels);
  }
  const max = flat.reduce((a, b) => Math.max(a, b), 0);
  const scale = max > 1 ? 1 / 255 : 1;
  return Float32Array.from(flat, (v) => v * scale);
}

/** Paint a 28x28 image on a canvas (white ink on black, as MNIST); CSS scales it up with crisp pixels. */
function paintPixels(canvas, pixels) {
  const values = normalizePixels(pixels);
  const side = Math.round(Math.sqrt(values.length));
  canvas.width = side;
  canvas.height = side;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(side, side);
  values.forEach((v, i) => {
    const g = Math.max(0, Math.min(255, Math.round(v * 255)));
    image.data.set([g, g, g, 255], i * 4);
  });
  ctx.putImageData(image, 0, 0);
  return canvas;
}

/** A small SVG bar chart of the 10 class probabilities, the predicted digit highlighted. */
function barChart(probabilities, digit, title) {
  const width = 250;
  const height = 100;
  const barWidth = width / 10;
  const plot = height - 20;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "bars");
  svg.setAttribute("role", "img");
  const label = probabilities.map((p, d) => `${d}: ${(p * 100).toFixed(1)}%`).join(", ");
  svg.setAttribute("aria-label", `${title}. Probabilities ${label}`);
  probabilities.forEach((p, d) => {
    const h = Math.max(1, p * (plot - 12));
    const rect = document.createElementNS(SVG_NS, "rect");
    rect.setAttribute("x", String(d * barWidth + 3));
    rect.setAttribute("y", String(plot - h));
    rect.setAttribute("width", String(barWidth - 6));
    rect.setAttribute("height", String(h));
    rect.setAttribute("class", d === digit ? "bar top" : "bar");
    const tip = document.createElementNS(SVG_NS, "title");
    tip.textContent = `${d}: ${(p * 100).toFixed(2)}%`;
    rect.appendChild(tip);
    svg.appendChild(rect);
    const text = document.createElementNS(SVG_NS, "text");
    text.setAttribute("x", String(d * barWidth + barWidth / 2));
    text.setAttribute("y", String(height - 4));
    text.setAttribute("class", d === digit ? "axis top" : "axis");
    text.textContent = String(d);
    svg.appendChild(text);
    if (p >= 0.05) {
      const value = document.createElementNS(SVG_NS, "text");
      value.setAttribute("x", String(d * barWidth + barWidth / 2));
      value.setAttribute("y", String(plot - h - 3));
      value.setAttribute("class", "value");
      value.textContent = `${Math.round(p * 100)}`;
      svg.appendChild(value);
    }
  });
  return svg;
}

/** Create an element with attributes and children in one call. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  children.forEach((c) => c && node.append(c));
  return node;
}

function percent(p) {
  return `${(p * 100).toFixed(1)}%`;
}
