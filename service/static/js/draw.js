// The drawing page: a canvas drawn with mouse, touch or pen (Pointer Events), or a photo from upload,
// drag-and-drop or the clipboard; each served model predicts it and shows what it saw; feedback goes back.
"use strict";

(function () {
  const pad = document.getElementById("pad");
  const photo = document.getElementById("photo");
  const dropzone = document.getElementById("dropzone");
  const fileInput = document.getElementById("file");
  const live = document.getElementById("live");
  const status = document.getElementById("status");
  const results = document.getElementById("results");
  const feedback = document.getElementById("feedback");
  const feedbackStatus = document.getElementById("feedback-status");
  const ctx = pad.getContext("2d");

  // MNIST digits are ~20 px tall with ~2.5 px strokes: keep that ratio for a digit drawn ~2/3 of the pad.
  const STROKE = pad.width / 14;

  let models = [null];
  let photoBlob = null; // when set, the photo is the input instead of the canvas
  let hasInk = false;
  let drawing = null; // {id, x, y} of the pointer drawing now
  let predictions = []; // the current results, for feedback
  let inFlight = null;
  let liveTimer = null;
  let answered = 0; // predictions shown so far: tests and tools wait on body[data-answered]

  function resetPad() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.strokeStyle = "#fff";
    ctx.fillStyle = "#fff";
    ctx.lineWidth = STROKE;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    hasInk = false;
    dropzone.classList.remove("inked");
  }

  function point(event) {
    const box = pad.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) / box.width) * pad.width,
      y: ((event.clientY - box.top) / box.height) * pad.height,
    };
  }

  function dot(p) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, STROKE / 2, 0, Math.PI * 2);
    ctx.fill();
  }

  pad.addEventListener("pointerdown", (event) => {
    if (drawing || event.button > 0) return;
    event.preventDefault();
    if (photoBlob) clearAll();
    pad.setPointerCapture(event.pointerId);
    const p = point(event);
    drawing = { id: event.pointerId, ...p };
    dot(p);
    hasInk = true;
    dropzone.classList.add("inked");
    window.clearTimeout(liveTimer);
  });

  pad.addEventListener("pointermove", (event) => {
    if (!drawing || event.pointerId !== drawing.id) return;
    event.preventDefault();
    // Coalesced events keep fast strokes smooth on high-rate pens and touch screens.
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) {
      const p = point(e);
      ctx.beginPath();
      ctx.moveTo(drawing.x, drawing.y);
      ctx.lineTo(p.x, p.y);
      ctx.stroke();
      drawing.x = p.x;
      drawing.y = p.y;
    }
  });

  function endStroke(event) {
    if (!drawing || event.pointerId !== drawing.id) return;
    drawing = null;
    if (live.checked) {
      window.clearTimeout(liveTimer);
      liveTimer = window.setTimeout(predict, 250);
    }
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  function clearAll() {
    resetPad();
    photoBlob = null;
    photo.hidden = true;
    if (photo.src) URL.revokeObjectURL(photo.src);
    photo.removeAttribute("src");
    pad.hidden = false;
    results.replaceChildren();
    feedback.hidden = true;
    predictions = [];
    status.textContent = "Draw a digit, then press Predict.";
  }

  function usePhoto(blob) {
    if (!blob || !blob.type.startsWith("image/")) {
      status.textContent = "That is not an image: choose a PNG, JPEG, GIF, BMP or WebP file.";
      return;
    }
    clearAll();
    photoBlob = blob;
    photo.src = URL.createObjectURL(blob);
    photo.hidden = false;
    pad.hidden = true;
    dropzone.classList.add("inked");
    predict();
  }

  function padBlob() {
    return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  }

  async function predictOne(blob, model) {
    const form = new FormData();
    form.append("image", blob, photoBlob && photoBlob.name ? photoBlob.name : "digit.png");
    if (model) form.append("model", model);
    return api("/predict?include_input=1", { method: "POST", body: form });
  }

  function resultCard(result) {
    const title = `${result.model} v${result.version}`;
    const seen = paintPixels(el("canvas", { class: "seen", "aria-hidden": "true" }), result.input || []);
    return el(
      "article",
      { class: "result", "data-model": result.model, "data-id": result.id, "aria-label": `Model ${title}` },
      el("h3", { text: title }),
      el(
        "div",
        { class: "answer" },
        el("span", { class: "digit", "data-testid": "digit", text: String(result.digit) }),
        el("span", { class: "confidence", text: `${percent(result.confidence)} sure` }),
      ),
      barChart(result.probabilities, result.digit, `Model ${title}`),
      el(
        "figure",
        { class: "seen-figure" },
        seen,
        el("figcaption", { text: `The 28×28 image ${result.model} saw` }),
      ),
      el("p", { class: "meta", text: `${result.latency_ms.toFixed(1)} ms · id ${result.id.slice(0, 8)}` }),
    );
  }

  async function predict() {
    if (!photoBlob && !hasInk) {
      status.textContent = "The drawing area is empty: draw a digit first.";
      return;
    }
    const token = {};
    inFlight = token;
    status.textContent = "Predicting…";
    const blob = photoBlob || (await padBlob());
    const outcomes = await Promise.allSettled(models.map((m) => predictOne(blob, m)));
    if (inFlight !== token) return; // a newer request replaced this one
    const ok = outcomes.filter((o) => o.status === "fulfilled").map((o) => o.value);
    const failed = outcomes.filter((o) => o.status === "rejected").map((o) => o.reason);
    predictions = ok;
    results.replaceChildren(...ok.map(resultCard));
    document.body.dataset.answered = String(++answered);
    if (!ok.length) {
      status.textContent = failed.length ? `Could not predict: ${failed[0].message}` : "No model answered.";
      feedback.hidden = true;
      return;
    }
    const summary = ok.map((r) => `${r.model} says ${r.digit} (${percent(r.confidence)})`).join("; ");
    status.textContent = failed.length ? `${summary}. Also: ${failed[0].message}` : `${summary}.`;
    feedback.hidden = false;
    feedbackStatus.textContent = "";
    // On a phone the answer is below the drawing: bring it into view (not while drawing live).
    if (!live.checked && window.matchMedia("(max-width: 759px)").matches) {
      document.getElementById("result-heading").scrollIntoView({ block: "start" });
    }
    feedback.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", "false"));
  }

  async function sendFeedback(label, button) {
    if (!predictions.length) return;
    feedbackStatus.textContent = "Sending…";
    const outcomes = await Promise.allSettled(
      predictions.map((r) =>
        api(`/api/predictions/${encodeURIComponent(r.id)}/feedback`, {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ label }),
        }),
      ),
    );
    const failed = outcomes.filter((o) => o.status === "rejected");
    feedback.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
    feedbackStatus.textContent = failed.length
      ? `Could not record the feedback: ${failed[0].reason.message}`
      : `Thanks! Recorded ${label} as the right digit. It shows on the History page.`;
  }

  document.getElementById("clear").addEventListener("click", clearAll);
  document.getElementById("predict").addEventListener("click", predict);
  feedback.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-label]");
    if (button) sendFeedback(Number(button.dataset.label), button);
  });

  fileInput.addEventListener("change", () => {
    if (fileInput.files.length) usePhoto(fileInput.files[0]);
    fileInput.value = "";
  });

  ["dragenter", "dragover"].forEach((type) =>
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.add("over");
    }),
  );
  ["dragleave", "drop"].forEach((type) =>
    dropzone.addEventListener(type, () => dropzone.classList.remove("over")),
  );
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer ? event.dataTransfer.files : [];
    if (files.length) usePhoto(files[0]);
  });

  document.addEventListener("paste", (event) => {
    const items = event.clipboardData ? Array.from(event.clipboardData.items) : [];
    const item = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (item) {
      event.preventDefault();
      usePhoto(item.getAsFile());
    }
  });

  resetPad();
  servedModels().then((names) => {
    models = names;
    document.body.dataset.models = names.filter(Boolean).join(",");
    document.body.dataset.ready = "true";
  });
})();
