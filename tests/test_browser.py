"""The web page in a real headless Chromium (Debian's, driven by Playwright) against the real gunicorn
server: draw, upload, drop, paste, feedback, history, keyboard, a phone-sized screen, and no request leaves
the service."""

from __future__ import annotations

import base64
import itertools
import math
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from service.data import load_mnist
from tests.conftest import missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Offline and quiet: no component updates, no field trials, nothing that phones home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 30_000

# Strokes that form digits, in fractions of the drawing area (MNIST-like proportions: a tall digit, centred).
STROKES = {
    1: [[(0.52, 0.15), (0.50, 0.50), (0.48, 0.85)]],
    7: [[(0.28, 0.2), (0.72, 0.2), (0.58, 0.45), (0.45, 0.85)]],
    0: [
        [
            (0.5 + 0.2 * math.sin(t / 20 * 2 * math.pi), 0.5 - 0.32 * math.cos(t / 20 * 2 * math.pi))
            for t in range(21)
        ]
    ],
}


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Debian's Chromium, never a downloaded browser build."""
    if not CHROMIUM.exists():
        missing("Chromium", "apt-get install chromium (scripts/install-system-deps.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def shots(output_dir: Path) -> Path:
    path = output_dir / "browser"
    path.mkdir(exist_ok=True)
    return path


class Visit:
    """A browser tab on the service that records every URL it requests."""

    def __init__(self, browser, base_url: str, **context_args) -> None:
        self.base_url = base_url
        self.context = browser.new_context(**context_args)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.requests: list[str] = []
        self.console_errors: list[str] = []
        self.expected_errors: list[str] = []  # substrings of console errors a test provokes on purpose
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))

    def open(self, path: str = "/") -> None:
        self.page.goto(self.base_url + path)
        self.page.wait_for_selector("body[data-ready='true']")

    def foreign_requests(self) -> list[str]:
        own = urlsplit(self.base_url).netloc
        return [
            u
            for u in self.requests
            if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc != own
        ]


@pytest.fixture
def visit(browser, server) -> Iterator:
    """Open tabs on the running server; afterwards none may have talked to another host or logged an error."""
    opened: list[Visit] = []

    def open_visit(path: str = "/", **context_args) -> Visit:
        v = Visit(browser, server.url, **{"viewport": DESKTOP, **context_args})
        opened.append(v)
        v.open(path)
        return v

    yield open_visit
    for v in opened:
        foreign = v.foreign_requests()
        errors = [e for e in v.console_errors if not any(x in e for x in v.expected_errors)]
        v.context.close()
        assert not foreign, f"the page requested other hosts: {foreign}"
        assert not errors, f"the browser logged errors: {errors}"


def draw(page, strokes: list[list[tuple[float, float]]], device: str = "mouse") -> None:
    """Draw each stroke: pressed, dragged through its points in small steps, released. `mouse` uses
    Playwright's mouse; `touch` and `pen` send the browser's own input events over CDP (a finger on a touch
    screen, a stylus), so the page sees pointerType "touch" or "pen" as on a real device."""
    box = page.locator("#pad").bounding_box()
    assert box is not None
    page.evaluate(
        """() => { window.pointerTypes = []; document.getElementById('pad')
            .addEventListener('pointerdown', e => pointerTypes.push(e.pointerType)); }"""
    )
    cdp = page.context.new_cdp_session(page) if device != "mouse" else None
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        path = [points[0]] + [
            (x0 + (x1 - x0) * i / 8, y0 + (y1 - y0) * i / 8)
            for (x0, y0), (x1, y1) in itertools.pairwise(points)
            for i in range(1, 9)
        ]
        if device == "mouse":
            page.mouse.move(*path[0])
            page.mouse.down()
            for point in path[1:]:
                page.mouse.move(*point)
            page.mouse.up()
        elif device == "touch":
            assert cdp is not None
            for i, (x, y) in enumerate(path):
                kind = "touchStart" if i == 0 else "touchMove"
                cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        else:
            assert cdp is not None
            pen = {"button": "left", "pointerType": "pen", "force": 0.6}
            cdp.send("Input.dispatchMouseEvent", {"type": "mousePressed", "x": path[0][0], "y": path[0][1],
                                                  "clickCount": 1, "buttons": 1, **pen})  # fmt: skip
            for x, y in path[1:]:
                cdp.send(
                    "Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "buttons": 1, **pen}
                )
            x, y = path[-1]
            cdp.send(
                "Input.dispatchMouseEvent", {"type": "mouseReleased", "x": x, "y": y, "clickCount": 1, **pen}
            )
    if cdp is not None:
        cdp.detach()
    assert page.evaluate("window.pointerTypes") == [device] * len(strokes), "the page saw other pointers"


# Sum of the red channel of a canvas: 0 when it is all black (no ink).
INK_JS = """cv => { const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; }"""


def until(page, condition: str) -> None:
    """Wait until a JS expression is true. Passed as a function: Playwright evaluates a bare expression with
    eval(), which the page's Content-Security-Policy (rightly) forbids."""
    page.wait_for_function(f"() => ({condition})")


def answered(page) -> int:
    """How many predictions the page has shown so far (body[data-answered])."""
    return int(page.evaluate("document.body.dataset.answered || '0'"))


def results(page, count: int, after: int | None = None) -> list[dict]:
    """Wait for an answer newer than number `after` (if given) with one card per model; read the cards."""
    if after is not None:
        until(page, f"Number(document.body.dataset.answered || 0) > {after}")
    until(page, f"document.querySelectorAll('#results .result').length === {count}")
    return page.eval_on_selector_all(
        "#results .result",
        """cards => cards.map(c => ({
            model: c.dataset.model,
            id: c.dataset.id,
            digit: Number(c.querySelector('.digit').textContent),
            confidence: c.querySelector('.confidence').textContent,
            bars: c.querySelectorAll('svg.bars rect').length,
            seen: [c.querySelector('canvas.seen').width, c.querySelector('canvas.seen').height],
            ink: (INK)(c.querySelector('canvas.seen')),
        }))""".replace("INK", INK_JS),
    )


def served_models(page) -> list[str]:
    return page.evaluate("document.body.dataset.models").split(",")


@pytest.fixture(scope="module")
def mnist_pngs(mnist_data_dir: Path, tmp_path_factory) -> dict[int, tuple[Path, int]]:
    """The first test image of each digit, saved as PNG exactly as MNIST stores it: index -> (path, label)."""
    data = load_mnist(mnist_data_dir)
    folder = tmp_path_factory.mktemp("mnist-png")
    chosen: dict[int, tuple[Path, int]] = {}
    for index, label in enumerate(data.test_labels[:100]):
        if int(label) in {lab for _, lab in chosen.values()}:
            continue
        path = folder / f"mnist-test-{index}-label-{label}.png"
        Image.fromarray(data.test_images[index]).save(path)
        chosen[index] = (path, int(label))
    return chosen


@pytest.mark.parametrize("digit", sorted(STROKES))
def test_drawing_a_digit_on_the_canvas_gets_it_predicted(visit, shots: Path, digit: int) -> None:
    tab = visit("/")
    page = tab.page
    draw(page, STROKES[digit])
    page.get_by_role("button", name="Predict", exact=True).click()
    models = served_models(page)
    shown = results(page, len(models))
    assert {r["model"] for r in shown} == set(models)
    for r in shown:
        assert r["bars"] == 10
        assert r["seen"] == [28, 28]
        assert r["ink"] > 0, "the 28x28 image the model saw is blank"
    best = {r["model"]: r["digit"] for r in shown}
    # The CNN reads a clearly drawn digit; the linear softmax model may not, and the page shows both.
    assert best.get("cnn", shown[0]["digit"]) == digit, f"drew {digit}, models said {best}"
    assert page.locator("#feedback").is_visible()
    page.screenshot(path=str(shots / f"draw-{digit}.png"), full_page=True)


def test_a_pen_draws_like_a_mouse(visit) -> None:
    page = visit("/").page
    draw(page, STROKES[1], device="pen")
    page.get_by_role("button", name="Predict", exact=True).click()
    shown = results(page, len(served_models(page)))
    assert next((r for r in shown if r["model"] == "cnn"), shown[0])["digit"] == 1


def test_predict_as_you_draw_needs_no_click(visit) -> None:
    page = visit("/").page
    page.get_by_label("Predict as I draw").check()
    draw(page, STROKES[1])
    shown = results(page, len(served_models(page)))
    assert all(r["bars"] == 10 for r in shown)


def test_clear_empties_the_canvas_and_the_results(visit) -> None:
    page = visit("/").page
    draw(page, STROKES[7])
    page.get_by_role("button", name="Predict", exact=True).click()
    results(page, len(served_models(page)))
    page.get_by_role("button", name="Clear").click()
    assert page.locator("#results .result").count() == 0
    ink = page.eval_on_selector("#pad", f"c => ({INK_JS})(c)")
    assert ink == 0
    page.get_by_role("button", name="Predict", exact=True).click()
    assert "empty" in page.locator("#status").inner_text()


def test_uploading_mnist_test_digits_shows_the_right_digit(visit, mnist_pngs, shots: Path) -> None:
    page = visit("/").page
    models = served_models(page)
    wrong = []
    for path, label in mnist_pngs.values():
        before = answered(page)
        page.set_input_files("#file", str(path))
        shown = results(page, len(models), after=before)
        cnn = next((r for r in shown if r["model"] == "cnn"), shown[0])
        if cnn["digit"] != label:
            wrong.append((path.name, cnn["digit"]))
        if label == 7:
            page.screenshot(path=str(shots / "upload-mnist-7.png"), full_page=True)
    # Ten different digits from the real test set, uploaded as PNG files through the file picker.
    assert not wrong, f"misread uploads: {wrong}"


def _transfer_script(event: str) -> str:
    """JS that builds a DataTransfer holding the PNG and fires `event` the way a real drop or paste does."""
    fire = {
        "drop": """const zone = document.getElementById('dropzone');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, ...opts}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, ...opts}));""",
        "paste": "document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, ...opts}));",
    }[event]
    return f"""([b64, name]) => {{ const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer(); dt.items.add(new File([bytes], name, {{type: 'image/png'}}));
        const opts = {{bubbles: true, cancelable: true}};
        {fire} }}"""


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_a_dropped_or_pasted_photo_is_predicted(visit, mnist_pngs, how: str) -> None:
    page = visit("/").page
    path, label = next(iter(mnist_pngs.values()))
    page.evaluate(_transfer_script(how), [base64.b64encode(path.read_bytes()).decode(), path.name])
    shown = results(page, len(served_models(page)))
    assert page.locator("#photo").is_visible()
    cnn = next((r for r in shown if r["model"] == "cnn"), shown[0])
    assert cnn["digit"] == label


def test_feedback_is_sent_and_shows_on_the_history_page(visit, mnist_pngs, shots: Path) -> None:
    page = visit("/").page
    path, label = next(iter(mnist_pngs.values()))
    page.set_input_files("#file", str(path))
    models = served_models(page)
    ids = [r["id"] for r in results(page, len(models), after=0)]
    wrong_label = (label + 1) % 10  # a label that disagrees, so the history shows the mismatch too
    page.get_by_role("button", name=f"The right digit is {wrong_label}").click()
    until(page, "document.getElementById('feedback-status').textContent.startsWith('Thanks')")

    page.goto(f"{page.url.rstrip('/')}/history")
    page.wait_for_selector("#history .entry")
    for record_id in ids:
        entry = page.locator(f"#history .entry[data-id='{record_id}']")
        assert entry.locator("[data-testid=label]").inner_text() == f"feedback: {wrong_label} ✗"
    page.screenshot(path=str(shots / "history.png"), full_page=True)


def test_history_filters_by_digit_and_model_and_pages(visit, server, mnist_pngs) -> None:
    # Enough records for two full pages: every chosen test digit, once per model, through the JSON API.
    page = visit("/").page
    models = served_models(page)
    pixels = [(np.asarray(Image.open(path)) / 255.0).round(3).tolist() for path, _ in mnist_pngs.values()]
    for model in models:
        for _ in range(2):
            answer = requests.post(
                f"{server.url}/predict", json={"pixels": pixels, "model": model}, timeout=30
            )
            assert answer.status_code == 200, answer.text
    page.goto(page.url.rstrip("/") + "/history")
    page.wait_for_selector("#history .entry")

    page.get_by_role("combobox", name="Model").select_option(models[0])
    shown_models = "[...document.querySelectorAll('.entry-model')].map(e => e.textContent.split(' ')[0])"
    until(page, f"{shown_models}.every(m => m === '{models[0]}')")
    page.get_by_role("combobox", name="Digit").select_option(str(next(iter(mnist_pngs.values()))[1]))
    until(page, "document.getElementById('history-status').textContent !== 'Loading…'")
    digits = page.eval_on_selector_all(".entry-digit", "ds => ds.map(d => Number(d.textContent))")
    assert digits and len(set(digits)) == 1

    page.get_by_role("combobox", name="Digit").select_option("")
    page.get_by_role("combobox", name="Model").select_option("")
    page.get_by_role("combobox", name="Per page").select_option("12")
    until(page, "document.querySelectorAll('#history .entry').length === 12")
    first_page = page.eval_on_selector_all("#history .entry", "es => es.map(e => e.dataset.id)")
    page.get_by_role("button", name="Older").click()
    until(page, "document.getElementById('page-no').textContent === 'Page 2'")
    page.wait_for_selector("#history .entry")
    second_page = page.eval_on_selector_all("#history .entry", "es => es.map(e => e.dataset.id)")
    assert second_page and not set(first_page) & set(second_page)
    page.get_by_role("button", name="Newest").click()
    until(page, "document.getElementById('page-no').textContent === 'Page 1'")


def test_controls_are_labelled_and_work_from_the_keyboard(visit, mnist_pngs) -> None:
    page = visit("/").page
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input, select, button')].filter(e =>
             !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()
           ).map(e => e.outerHTML)"""
    )
    assert not unlabelled
    path, label = next(iter(mnist_pngs.values()))
    page.set_input_files("#file", str(path))
    results(page, len(served_models(page)))
    # Reach the feedback button for the right digit with Tab alone, then press it with Enter.
    target = f"The right digit is {label}"
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('aria-label')") == target:
            break
    else:
        pytest.fail(f"Tab never reached the button {target!r}")
    page.keyboard.press("Enter")
    until(page, "document.getElementById('feedback-status').textContent.startsWith('Thanks')")
    assert page.get_by_role("button", name=target).get_attribute("aria-pressed") == "true"


def test_the_page_fits_a_phone_screen(visit, shots: Path) -> None:
    tab = visit("/", viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = tab.page
    draw(page, STROKES[7], device="touch")
    page.get_by_role("button", name="Predict", exact=True).click()
    shown = results(page, len(served_models(page)))
    assert next((r for r in shown if r["model"] == "cnn"), shown[0])["digit"] == 7
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the phone"
    page.screenshot(path=str(shots / "phone-screen.png"))  # what the phone shows: scrolled to the answer
    page.screenshot(path=str(shots / "phone.png"), full_page=True)
    page.goto(page.url.rstrip("/") + "/history")
    page.wait_for_selector("body[data-ready='true']")
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    page.screenshot(path=str(shots / "phone-history.png"), full_page=True)


def test_pages_load_only_from_the_service(visit) -> None:
    """Every asset comes from the service and a same-origin Content-Security-Policy enforces it."""
    for path in ("/", "/history"):
        tab = visit(path)
        tab.page.wait_for_load_state("networkidle")
        response = tab.page.request.get(tab.base_url + path)
        assert "default-src 'self'" in response.headers["content-security-policy"]
        loaded = {urlsplit(u).path for u in tab.requests}
        assert any(p.endswith(".css") for p in loaded) and any(p.endswith(".js") for p in loaded)
        assert not tab.foreign_requests()


def test_a_blank_upload_shows_the_servers_message(visit, tmp_path: Path) -> None:
    tab = visit("/")
    tab.expected_errors.append("status of 400")  # Chromium logs the 4xx answer as a failed load
    page = tab.page
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(blank)
    page.set_input_files("#file", str(blank))
    until(page, "document.getElementById('status').textContent.startsWith('Could not predict')")
    assert page.locator("#results .result").count() == 0
    assert page.locator("#feedback").is_hidden()
