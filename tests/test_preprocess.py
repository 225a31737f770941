"""Preprocessing: every step on its own, then whole images in every format, mode and disguise a user may send.

The digits are real MNIST test digits; each test disguises them (shift, scale, invert, colour, transparency,
palette, 1-bit, EXIF rotation, noise, other formats) and requires the pipeline to recover the original.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service import preprocess as pp
from service.data import load_test_set
from service.errors import BadImage, NoDigitFound, TooLarge

MAX_BYTES = 5_000_000
MAX_PIXELS = 25_000_000
SAMPLE = 40  # digits per disguise test: every class, a few seconds in all
CLOSE = 0.05  # mean |output - original| (0..1 scale) of a recovered digit; a wrong digit is ~0.15-0.25
SAME = 0.01  # ... of a digit that only moved or changed container: the crop and the 20 px box are unchanged


@pytest.fixture(scope="module")
def mnist_test(mnist_data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10k MNIST test digits (uint8, white on black) and their labels."""
    images, labels, _ = load_test_set(mnist_data_dir)
    return images, labels


@pytest.fixture(scope="module")
def digits(mnist_test: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return mnist_test[0][:SAMPLE]


@pytest.fixture(scope="module")
def labels(mnist_test: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return mnist_test[1][:SAMPLE]


def run(data: bytes) -> pp.Preprocessed:
    return pp.preprocess(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def mad(array: np.ndarray, digit: np.ndarray) -> float:
    """Mean absolute difference between a 0..1 output and a uint8 MNIST digit."""
    return float(np.abs(array - digit.astype(np.float32) / 255).mean())


def on_paper(digit: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Dark ink on white paper, `scale` times MNIST size: how people write digits."""
    image = Image.fromarray(255 - digit)
    if scale != 1:
        size = round(28 * scale)
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image)


def place(
    array: np.ndarray, shape: tuple[int, int], top: int, left: int, fill: int | tuple[int, ...]
) -> np.ndarray:
    """`array` pasted at (top, left) on a canvas of `shape` filled with `fill`."""
    canvas = np.full(shape + array.shape[2:], fill, dtype=np.uint8)
    canvas[top : top + array.shape[0], left : left + array.shape[1]] = array
    return canvas


def assert_recovers(
    outputs: list[np.ndarray], digits: np.ndarray, labels: np.ndarray, bound: float = CLOSE
) -> None:
    """Outputs are close to their digits, each closer to its own than to any sample digit of another class."""
    errors = np.array([mad(out, digit) for out, digit in zip(outputs, digits, strict=True)])
    assert errors.mean() < bound, f"outputs differ from their digits by {errors.mean():.3f} on average"
    assert errors.max() < 3 * bound, f"digit {errors.argmax()} differs by {errors.max():.3f}"
    for i, out in enumerate(outputs):
        others = [mad(out, d) for d, label in zip(digits, labels, strict=True) if label != labels[i]]
        assert errors[i] < min(others), f"digit {i} (a {labels[i]}) looks more like another digit"


# --- limits and decoding --------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    """A PNG claiming `width` x `height` gray pixels with 8 bytes of data: it cannot be decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"\0" * 8)


def test_empty_body_is_a_bad_image() -> None:
    with pytest.raises(BadImage, match="empty"):
        run(b"")


def test_too_many_bytes_is_refused_before_decoding() -> None:
    with pytest.raises(TooLarge, match="bytes"):
        pp.preprocess(b"\0" * 2049, max_bytes=2048, max_pixels=MAX_PIXELS)


def test_too_many_pixels_is_refused_from_the_header_alone() -> None:
    # The header claims 6000x5000 and no pixel data follows: only a header check can answer TooLarge.
    with pytest.raises(TooLarge, match="30000000 pixels"):
        run(png_header(6000, 5000))


def test_pixel_limit_applies_to_a_real_image() -> None:
    data = encode(Image.new("L", (100, 100), 255))
    with pytest.raises(TooLarge, match="limit is 9999"):
        pp.preprocess(data, max_bytes=MAX_BYTES, max_pixels=9_999)


def test_pillow_decompression_bomb_is_too_large_even_under_a_generous_limit() -> None:
    with pytest.raises(TooLarge, match="too many pixels"):
        pp.preprocess(png_header(20_000, 20_000), max_bytes=MAX_BYTES, max_pixels=10**9)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"])
def test_truncated_image_is_a_bad_image(digits: np.ndarray, fmt: str) -> None:
    data = encode(Image.fromarray(on_paper(digits[0], 4)), fmt)
    with pytest.raises(BadImage, match=r"truncated or corrupt|not a readable image") as info:
        run(data[: len(data) // 2])
    assert not isinstance(info.value, NoDigitFound)


@pytest.mark.parametrize(
    "data",
    [b"hello, this is not an image", bytes(range(256)) * 8, b"\x89PNG\r\n\x1a\n" + b"\0" * 64],
    ids=["text", "bytes", "png-signature-only"],
)
def test_garbage_is_a_bad_image(data: bytes) -> None:
    with pytest.raises(BadImage, match="not a readable image"):
        run(data)


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA"])
def test_formats_outside_the_list_are_refused(digits: np.ndarray, fmt: str) -> None:
    data = encode(Image.fromarray(digits[0]).convert("RGB"), fmt)
    with pytest.raises(BadImage, match="accepted formats"):
        run(data)


# --- each step ------------------------------------------------------------------------------------


def test_steps_are_ordered_uint8_images_ending_in_the_model_input(digits: np.ndarray) -> None:
    result = run(encode(Image.fromarray(on_paper(digits[0], 3))))
    assert list(result.steps) == [
        "decoded",
        "lighting",
        "ink",
        "background_removed",
        "cropped",
        "thickened",
        "scaled",
        "centered",
    ]
    for name, step in result.steps.items():
        assert step.dtype == np.uint8 and step.ndim == 2, name
    assert result.array.dtype == np.float32 and result.array.shape == (28, 28)
    assert result.array.min() >= 0 and result.array.max() <= 1
    np.testing.assert_array_equal(result.steps["centered"], np.rint(result.array * 255).astype(np.uint8))
    assert max(result.steps["scaled"].shape) == 20
    assert result.mime == "image/png"


def test_large_images_are_reduced_to_the_working_size(digits: np.ndarray) -> None:
    data = encode(Image.fromarray(place(on_paper(digits[0], 20), (900, 1200), 100, 300, 255)))
    decoded = run(data).steps["decoded"]
    assert max(decoded.shape) <= pp.WORK_SIDE
    assert decoded.shape[1] > decoded.shape[0]


def test_transparency_is_composited_onto_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.putpixel((5, 5), (0, 0, 0, 255))
    gray = pp.to_grayscale(rgba)
    assert gray[5, 5] == 0
    assert gray[0, 0] == 255


def test_sixteen_bit_gray_keeps_its_levels() -> None:
    wide = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    assert wide.mode.startswith("I;16")
    np.testing.assert_array_equal(pp.to_grayscale(wide), [[0, 128, 255]])


@pytest.mark.parametrize(("mode", "scale"), [("I", 1), ("I", 300), ("F", 1), ("F", 1 / 255)])
def test_wide_gray_modes_are_scaled_to_their_range(mode: str, scale: float) -> None:
    levels = np.array([[0, 128, 255]], dtype=np.float64)
    wide = Image.fromarray((levels * scale).astype(np.int32 if mode == "I" else np.float32))
    assert wide.mode == mode
    gray = pp.to_grayscale(wide)
    assert gray[0, 0] == 0 and gray[0, 2] == 255 and abs(int(gray[0, 1]) - 128) <= 1


def unevenly_lit(gray: np.ndarray, strength: float) -> np.ndarray:
    """`gray` under light falling off from the top-left corner by `strength` (0..1), with darker corners."""
    rows, cols = np.indices(gray.shape) / np.array(gray.shape)[:, None, None]
    light = (1 - strength * (rows + cols) / 2) * (1 - 0.3 * ((rows - 0.5) ** 2 + (cols - 0.5) ** 2))
    return np.clip(gray * light, 0, 255).astype(np.uint8)


def test_uneven_lighting_is_evened_out() -> None:
    page = np.full((200, 300), 220, dtype=np.uint8)
    page[60:140, 140:150] = 30  # a stroke
    lit = unevenly_lit(page, 0.5)
    assert int(lit.max()) - int(lit.min()) > 100
    even = pp.even_out_lighting(lit)
    paper = np.ones(page.shape, dtype=bool)
    paper[55:145, 135:155] = False
    assert int(even[paper].max()) - int(even[paper].min()) <= 8
    assert even[100, 145] < 60  # the stroke stays dark


def test_evenly_lit_images_are_left_alone(digits: np.ndarray) -> None:
    for gray in (digits[0], 255 - digits[1]):
        assert pp.even_out_lighting(gray) is gray


def test_paper_level_and_noise_come_from_the_border() -> None:
    rng = np.random.default_rng(0)
    gray = np.clip(rng.normal(200, 5, (100, 100)), 0, 255).astype(np.uint8)
    gray[30:70, 40:60] = 20
    paper = pp.estimate_paper(gray)
    assert paper.level == pytest.approx(200, abs=1)
    assert paper.sigma == pytest.approx(5, abs=1)


@pytest.mark.parametrize(
    ("paper", "ink", "inverted"),
    [(255, 0, True), (200, 40, True), (120, 10, True), (0, 255, False), (30, 200, False), (100, 240, False)],
)
def test_polarity_makes_the_ink_bright(paper: int, ink: int, inverted: bool) -> None:
    gray = np.full((40, 40), paper, dtype=np.uint8)
    gray[10:30, 18:22] = ink
    bright, new_paper = pp.to_white_on_black(gray, pp.estimate_paper(gray))
    assert bright[20, 20] > bright[0, 0]
    assert new_paper.level == (255 - paper if inverted else paper)


def test_polarity_is_not_outvoted_by_slightly_brighter_paper() -> None:
    gray = np.full((100, 100), 200, dtype=np.uint8)
    gray[5:95, 5:95] = 210  # the middle of the sheet is a little brighter than its edges
    gray[80:90, 10:12] = 30  # a small dark stroke: 20 pixels against 8,000 slightly bright ones
    bright, _ = pp.to_white_on_black(gray, pp.estimate_paper(gray))
    assert bright[85, 11] > bright[50, 50]


def test_background_suppression_zeroes_paper_saturates_ink_and_keeps_edges() -> None:
    rng = np.random.default_rng(1)
    ink = np.clip(rng.normal(40, 4, (60, 60)), 0, 255).astype(np.uint8)
    ink[20:40, 25:35] = 230  # stroke core
    ink[20:40, 24] = 135  # anti-aliased edge, half way
    clean = pp.suppress_background(ink, pp.estimate_paper(ink))
    assert clean[:10].max() == 0
    assert clean[25, 30] == 1
    assert 0.3 < clean[25, 24] < 0.7


def test_otsu_threshold_splits_two_modes() -> None:
    values = np.concatenate([np.full(500, 30), np.full(100, 200)]).astype(np.uint8)
    assert 30 < pp.otsu_threshold(pp.histogram(values)) <= 200


def test_bounding_box_ignores_isolated_specks_and_keeps_the_fringe() -> None:
    clean = np.zeros((100, 100), dtype=np.float32)
    clean[30:60, 40:50] = 1.0
    clean[29, 40:50] = 0.2  # faint anti-aliased fringe above the stroke
    clean[5, 5] = clean[90, 95] = clean[91, 95] = 1.0  # specks: a pixel and a pair
    assert pp.ink_bounding_box(clean) == (29, 60, 40, 50)


def test_stroke_width_measures_lines() -> None:
    mask = np.zeros((100, 100), dtype=bool)
    mask[10:90, 40:46] = True  # a 6 px wide bar
    assert pp.stroke_width(mask) == pytest.approx(6, rel=0.1)


def test_hairlines_are_thickened_to_mnist_stroke_width() -> None:
    digit = np.zeros((200, 100), dtype=np.float32)
    digit[:, 50] = 1.0  # a 1 px line that would be 0.1 px wide at 20 px
    thick = pp.thicken_strokes(digit, 20)
    width = pp.stroke_width(thick >= 0.5) * 20 / max(thick.shape)
    assert pp.MIN_STROKE <= width <= pp.TARGET_STROKE * 1.2
    assert thick.shape[0] > digit.shape[0]  # padded: the widened strokes are not clipped


def test_mnist_strokes_are_not_thickened(digits: np.ndarray) -> None:
    for d in digits:
        crop = d[d.any(axis=1)][:, d.any(axis=0)].astype(np.float32) / 255
        assert pp.thicken_strokes(crop, 20) is crop


def test_scale_to_box_keeps_the_aspect_ratio() -> None:
    tall = np.ones((90, 30), dtype=np.float32)
    assert pp.scale_to_box(tall, 20).shape == (20, 7)
    small = np.ones((10, 5), dtype=np.float32)
    assert pp.scale_to_box(small, 20).shape == (20, 10)
    exact = np.random.default_rng(2).random((20, 13), dtype=np.float32)
    assert pp.scale_to_box(exact, 20) is exact


def test_center_by_mass_puts_the_centre_of_mass_in_the_middle() -> None:
    digit = np.full((20, 10), 0.3, dtype=np.float32)
    digit[:10] = 1.0  # top-heavy: the centre of mass is high in the box
    field = pp.center_by_mass(digit, 28)
    rows, cols = np.indices(field.shape)
    assert abs((rows * field).sum() / field.sum() - 14) <= 0.5
    assert abs((cols * field).sum() / field.sum() - 14) <= 0.5
    assert field.sum() == pytest.approx(digit.sum())


def test_center_by_mass_never_pushes_ink_out_of_the_field() -> None:
    digit = np.zeros((20, 10), dtype=np.float32)
    digit[:2] = 1.0  # all the mass at the top: centring it would move the rest out of the field
    field = pp.center_by_mass(digit, 28)
    assert field.sum() == digit.sum()
    assert field[27].sum() == 0 and field[26 - 19 :].any()


# --- whole images ---------------------------------------------------------------------------------


def test_mnist_digits_come_through_unchanged(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    images = mnist_test[0][:1000]
    errors = np.array([mad(run(encode(Image.fromarray(d))).array, d) for d in images])
    assert errors.mean() < 0.001
    assert np.mean(errors < 1 / 255) > 0.98  # the rest moved by one pixel: their centre of mass is on a .5
    assert errors.max() < 0.15


def every_step(gray: np.ndarray) -> np.ndarray:
    """The whole pipeline on a decoded gray image, step by step, without the shortcut."""
    ink, paper = pp.to_white_on_black(pp.even_out_lighting(gray), pp.estimate_paper(gray))
    clean = pp.suppress_background(ink, paper)
    top, bottom, left, right = pp.ink_bounding_box(clean)
    thickened = pp.thicken_strokes(clean[top:bottom, left:right], pp.BOX)
    return pp.center_by_mass(pp.scale_to_box(thickened, pp.BOX), pp.SIDE)


def test_mnist_style_uploads_take_a_shortcut_to_the_same_array(
    mnist_test: tuple[np.ndarray, np.ndarray],
) -> None:
    shortcuts = 0
    for digit in mnist_test[0][:300]:
        result = run(encode(Image.fromarray(digit)))
        np.testing.assert_array_equal(result.array, every_step(digit))
        shortcuts += pp.already_mnist(digit, "image/png") is not None
        assert list(result.steps)[-1] == "centered" and len(result.steps) == 8
    assert shortcuts >= 290  # nearly every MNIST digit is MNIST-style already


def test_a_hairline_digit_at_mnist_size_is_still_thickened() -> None:
    image = Image.new("L", (28, 28))
    ImageDraw.Draw(image).line([(5, 5), (24, 5), (12, 24)], fill=255, width=1)
    gray = np.asarray(image)
    result = run(encode(image))
    assert pp.already_mnist(gray, "image/png") is None
    np.testing.assert_array_equal(result.array, every_step(gray))
    assert pp.stroke_width(result.array >= 0.5) >= pp.MIN_STROKE


def test_shifted_digit_on_a_larger_canvas(digits: np.ndarray, labels: np.ndarray) -> None:
    outputs = [run(encode(Image.fromarray(place(d, (70, 50), 40, 3, 0)))).array for d in digits]
    assert_recovers(outputs, digits, labels, SAME)


@pytest.mark.parametrize("inverted", [False, True])
def test_tightly_cropped_digit(digits: np.ndarray, labels: np.ndarray, inverted: bool) -> None:
    # Cropped by hand to the ink: the strokes touch the image's edges, where the paper is looked for.
    outputs = []
    for d in digits:
        tight = d[d.any(axis=1)][:, d.any(axis=0)]
        outputs.append(run(encode(Image.fromarray(255 - tight if inverted else tight))).array)
    assert_recovers(outputs, digits, labels)


def test_scaled_up_digit(digits: np.ndarray, labels: np.ndarray) -> None:
    outputs = [run(encode(Image.fromarray(255 - on_paper(d, 5)))).array for d in digits]
    assert_recovers(outputs, digits, labels)


def test_dark_ink_on_light_paper_is_inverted(digits: np.ndarray, labels: np.ndarray) -> None:
    outputs = [run(encode(Image.fromarray(255 - d))).array for d in digits]
    assert_recovers(outputs, digits, labels, SAME)


def test_coloured_ink_on_coloured_paper(digits: np.ndarray, labels: np.ndarray) -> None:
    outputs = []
    for d in digits:
        weight = (d.astype(np.float32) / 255)[:, :, None]
        paper, ink = np.array([250, 235, 120]), np.array([20, 40, 160])  # blue pen on yellow paper
        rgb = (paper * (1 - weight) + ink * weight).astype(np.uint8)
        outputs.append(run(encode(Image.fromarray(place(rgb, (60, 60), 10, 20, (250, 235, 120))))).array)
    assert_recovers(outputs, digits, labels)


@pytest.mark.parametrize("size", [100, 600, 2000])
def test_a_digit_written_with_a_fine_pen_comes_out_with_mnist_strokes(size: int) -> None:
    page = Image.new("L", (size, size), 255)
    points = [(0.3, 0.25), (0.7, 0.25), (0.45, 0.8)]  # a 7
    ImageDraw.Draw(page).line([(x * size, y * size) for x, y in points], fill=0, width=max(1, size // 300))
    array = run(encode(page)).array
    width = pp.stroke_width(array >= 0.5)
    assert pp.MIN_STROKE <= width <= 2 * pp.TARGET_STROKE
    assert (array >= 0.5).sum() > 20


def test_black_strokes_on_a_transparent_canvas(digits: np.ndarray, labels: np.ndarray) -> None:
    # What the web page's drawing canvas sends: RGBA, ink only in the alpha channel.
    outputs = []
    for d in digits:
        rgba = np.zeros((28 * 4, 28 * 4, 4), dtype=np.uint8)
        rgba[:, :, 3] = np.asarray(Image.fromarray(d).resize((112, 112), Image.Resampling.BICUBIC))
        outputs.append(run(encode(Image.fromarray(rgba))).array)
    assert_recovers(outputs, digits, labels)


def test_gray_with_alpha(digits: np.ndarray, labels: np.ndarray) -> None:
    outputs = []
    for d in digits:
        la = np.stack([np.zeros_like(d), d], axis=-1)
        outputs.append(run(encode(Image.fromarray(la, mode="LA"))).array)
    assert_recovers(outputs, digits, labels, SAME)


def test_palette_image_with_a_transparent_background(digits: np.ndarray, labels: np.ndarray) -> None:
    outputs = []
    for d in digits:
        palette = Image.fromarray(on_paper(d)).convert("P")  # gray palette: index = level
        outputs.append(run(encode(palette, transparency=255)).array)  # the paper is transparent
    assert_recovers(outputs, digits, labels, SAME)


def test_one_bit_image(digits: np.ndarray, labels: np.ndarray) -> None:
    outputs = [run(encode(Image.fromarray(on_paper(d, 4)).convert("1"))).array for d in digits]
    assert_recovers(outputs, digits, labels)


@pytest.mark.parametrize(
    ("orientation", "stored_as"),
    [(6, Image.Transpose.ROTATE_90), (3, Image.Transpose.ROTATE_180), (8, Image.Transpose.ROTATE_270)],
)
def test_exif_orientation_is_applied(
    digits: np.ndarray, labels: np.ndarray, orientation: int, stored_as: Image.Transpose
) -> None:
    # A phone stores the sensor's pixels and says in EXIF how to turn them upright.
    exif = Image.Exif()
    exif[0x0112] = orientation
    outputs, unturned = [], []
    for d in digits:
        stored = Image.fromarray(on_paper(d, 4)).transpose(stored_as)
        outputs.append(run(encode(stored, "JPEG", quality=90, exif=exif)).array)
        unturned.append(run(encode(stored, "JPEG", quality=90)).array)
    assert_recovers(outputs, digits, labels)
    assert np.mean([mad(u, d) for u, d in zip(unturned, digits, strict=True)]) > 2 * CLOSE


def test_unevenly_lit_photo(digits: np.ndarray, labels: np.ndarray) -> None:
    outputs = []
    for d in digits:
        page = place(on_paper(d, 4), (240, 320), 60, 150, 255)
        outputs.append(run(encode(Image.fromarray(unevenly_lit(page, 0.6)), "JPEG", quality=85)).array)
    assert_recovers(outputs, digits, labels)


def test_small_digit_in_a_corner_of_a_large_photo(digits: np.ndarray, labels: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    outputs = []
    for d in digits[:10]:
        page = place(on_paper(d, 4), (900, 1200), 760, 40, 255)
        photo = unevenly_lit(page, 0.3).astype(np.float32) + rng.normal(0, 4, page.shape)
        outputs.append(run(encode(Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)), "JPEG")).array)
    assert_recovers(outputs, digits[:10], labels[:10])


def test_noisy_photo_with_specks(digits: np.ndarray, labels: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    outputs = []
    for d in digits:
        gray = place(on_paper(d, 4), (200, 160), 50, 30, 255).astype(np.float32) * 0.8 + 20
        gray += rng.normal(0, 8, gray.shape)
        specks = rng.random(gray.shape) < 0.002
        gray[specks] = 0  # isolated black dots: dust, sensor noise
        outputs.append(run(encode(Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)), "JPEG")).array)
    assert_recovers(outputs, digits, labels)


@pytest.mark.parametrize(
    ("fmt", "mime", "mode", "bound"),
    [
        ("PNG", "image/png", "L", SAME),
        ("JPEG", "image/jpeg", "RGB", CLOSE),
        ("GIF", "image/gif", "P", SAME),
        ("BMP", "image/bmp", "RGB", SAME),
        ("WEBP", "image/webp", "RGB", CLOSE),
        ("TIFF", "image/tiff", "L", SAME),
        ("PNG", "image/png", "I;16", SAME),
        ("TIFF", "image/tiff", "I;16", SAME),
        ("WEBP", "image/webp", "RGBA", CLOSE),
    ],
)
def test_every_format(
    digits: np.ndarray, labels: np.ndarray, fmt: str, mime: str, mode: str, bound: float
) -> None:
    outputs = []
    for d in digits:
        light = on_paper(d, 3)
        if mode == "I;16":
            image = Image.fromarray(light.astype(np.uint16) * 257)
        elif mode == "RGBA":
            image = Image.fromarray(np.dstack([light] * 3 + [np.full_like(light, 255)]))
        else:
            image = Image.fromarray(light).convert(mode)
        result = run(encode(image, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {})))
        assert result.mime == mime
        outputs.append(result.array)
    reference = [run(encode(Image.fromarray(on_paper(d, 3)))).array for d in digits]
    assert_recovers(outputs, digits, labels)
    assert np.mean([np.abs(o - r).mean() for o, r in zip(outputs, reference, strict=True)]) < bound


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_first_frame_of_an_animation(digits: np.ndarray, fmt: str) -> None:
    frames = [
        Image.fromarray(on_paper(digits[0], 3)).convert("RGB"),
        Image.fromarray(on_paper(digits[1], 3)).convert("RGB"),
    ]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    array = run(data).array
    assert mad(array, digits[0]) < CLOSE
    assert mad(array, digits[0]) < mad(array, digits[1])


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (64, 64), 255),
        Image.new("L", (64, 64), 0),
        Image.new("RGB", (300, 200), (120, 160, 90)),
        Image.new("RGBA", (280, 280), (0, 0, 0, 0)),
        Image.new("1", (28, 28), 1),
    ],
    ids=["white", "black", "green", "empty-canvas", "one-bit"],
)
def test_uniform_image_has_no_digit(image: Image.Image) -> None:
    with pytest.raises(NoDigitFound, match="no digit found"):
        run(encode(image))


@pytest.mark.parametrize("sigma", [3, 10, 25])
def test_noise_alone_has_no_digit(sigma: float) -> None:
    rng = np.random.default_rng(int(sigma))
    gray = np.clip(rng.normal(180, sigma, (240, 320)), 0, 255).astype(np.uint8)
    with pytest.raises(NoDigitFound, match="no digit found"):
        run(encode(Image.fromarray(gray), "JPEG"))


def test_a_few_specks_are_no_digit() -> None:
    image = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(image)
    for x, y in [(20, 30), (150, 40), (90, 170), (60, 100)]:
        draw.point((x, y), fill=0)
    with pytest.raises(NoDigitFound, match="no digit found"):
        run(encode(image))


def test_faint_smudge_is_no_digit() -> None:
    gray = np.full((100, 100), 220, dtype=np.uint8)
    gray[30:70, 45:55] = 205  # 15 levels darker than the paper: a shadow, not ink
    with pytest.raises(NoDigitFound, match="no digit found"):
        run(encode(Image.fromarray(gray)))
