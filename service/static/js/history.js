// The history page: recent predictions newest first, filtered by digit and model, paged with the API's
// `next_before` cursor, each with a thumbnail of the 28x28 image the model saw and its feedback label.
"use strict";

(function () {
  const list = document.getElementById("history");
  const status = document.getElementById("history-status");
  const digitFilter = document.getElementById("f-digit");
  const modelFilter = document.getElementById("f-model");
  const limitFilter = document.getElementById("f-limit");
  const older = document.getElementById("older");
  const newest = document.getElementById("newest");
  const pageNo = document.getElementById("page-no");

  // cursors[i] is the `before` value that loads page i+1; page 1 has none.
  let cursors = [null];
  let nextBefore = null;
  // Filters can change faster than the server answers: only the newest request may paint the list.
  let latestRequest = 0;

  function when(created) {
    const date = new Date(created);
    return Number.isNaN(date.getTime()) ? String(created) : date.toLocaleString();
  }

  async function pixelsOf(record) {
    if (record.pixels) return record.pixels;
    const detail = await api(`/api/predictions/${encodeURIComponent(record.id)}`);
    return detail.pixels;
  }

  function item(record) {
    const thumb = el("canvas", { class: "thumb", width: 28, height: 28, "aria-hidden": "true" });
    pixelsOf(record)
      .then((pixels) => pixels && paintPixels(thumb, pixels))
      .catch(() => thumb.classList.add("missing"));
    const hasLabel = record.label !== null && record.label !== undefined;
    const verdict = hasLabel
      ? el("span", {
          class: record.label === record.digit ? "label agree" : "label disagree",
          "data-testid": "label",
          text: `feedback: ${record.label} ${record.label === record.digit ? "✓" : "✗"}`,
        })
      : el("span", { class: "label none", text: "no feedback" });
    return el(
      "li",
      { class: "entry", "data-id": record.id },
      thumb,
      el(
        "div",
        { class: "entry-text" },
        el("span", { class: "entry-digit", text: String(record.digit) }),
        el("span", { class: "entry-conf", text: percent(record.confidence) }),
        el("span", { class: "entry-model", text: `${record.model} v${record.version}` }),
        el("time", { datetime: record.created, text: when(record.created) }),
        verdict,
        record.image_url
          ? el("a", { class: "original", href: record.image_url, target: "_blank", text: "original upload" })
          : null,
      ),
    );
  }

  async function load() {
    const params = new URLSearchParams({ limit: limitFilter.value });
    const before = cursors[cursors.length - 1];
    if (before) params.set("before", before);
    if (digitFilter.value) params.set("digit", digitFilter.value);
    if (modelFilter.value) params.set("model", modelFilter.value);
    status.textContent = "Loading…";
    const request = ++latestRequest;
    try {
      const body = await api(`/api/predictions?${params}`);
      if (request !== latestRequest) return;
      const records = body.predictions || [];
      nextBefore = body.next_before || null;
      list.replaceChildren(...records.map(item));
      status.textContent = records.length
        ? `${records.length} prediction${records.length === 1 ? "" : "s"} on this page.`
        : "No predictions match these filters yet.";
    } catch (err) {
      if (request !== latestRequest) return;
      nextBefore = null;
      list.replaceChildren();
      status.textContent = `Could not load the history: ${err.message}`;
    }
    pageNo.textContent = `Page ${cursors.length}`;
    older.disabled = !nextBefore;
    newest.disabled = cursors.length === 1;
    document.body.dataset.ready = "true";
  }

  function restart() {
    cursors = [null];
    load();
  }

  older.addEventListener("click", () => {
    if (!nextBefore) return;
    cursors.push(nextBefore);
    load();
  });
  newest.addEventListener("click", restart);
  [digitFilter, modelFilter, limitFilter].forEach((s) => s.addEventListener("change", restart));
  document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());

  servedModels().then((names) => {
    names.filter(Boolean).forEach((name) => modelFilter.append(el("option", { value: name, text: name })));
    restart();
  });
})();
