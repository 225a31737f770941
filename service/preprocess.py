"""Image bytes -> 28x28 MNIST-style array, made the way MNIST itself was made.

MNIST digits are white ink on black, cropped to the ink, scaled (anti-aliased) so the longer side is 20 px,
then placed in a 28x28 field with the centre of mass at the centre. Each step below is one small function;
`preprocess` runs them in order and keeps every intermediate image so a person can see what the model saw.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from service.errors import BadImage, NoDigitFound, TooLarge

# Pillow format name -> MIME type; anything else is refused before decoding.
FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}
MIME = {**FORMATS, "MPO": "image/jpeg"}  # Pillow's JPEG opener returns "MPO" for phone cameras' JPEGs
ACCEPTED = "PNG, JPEG, GIF, BMP, WebP, TIFF"  # FORMATS as error messages name them

SIDE = 28  # output field
BOX = 20  # the digit's longer side inside the field
WORK_SIDE = 320  # larger photos are box-reduced to about this first: a 20 px digit needs no more
MIN_CONTRAST = 32  # ink must differ from the paper by this many gray levels (of 255), else the image is blank
NOISE_SIGMAS = 3.0  # paper brighter than its median by fewer noise sigmas than this is still paper
INK_QUANTILE = 0.75  # this quantile of the ink becomes full white (MNIST strokes have a saturated core)
MIN_STROKE = 0.9  # strokes thinner than this (in output px) are widened: 99.5% of MNIST digits are wider
TARGET_STROKE = 2.0  # ... to about this width (MNIST's median is 1.85, measured the same way)
EVEN_LIGHT = 4  # a border whose gray levels span no more than this is evenly lit
BORDER_SAMPLES = 4096  # border pixels used to fit the lighting
SATURATED = 8  # ink this close to white is white already
MIN_NEIGHBOURS = 3  # an ink pixel with fewer ink pixels in its 3x3 neighbourhood (itself included) is a speck
MIN_DIGIT_FRACTION = 1 / 40  # ink spanning less than this of the image's longer side is no digit
FRINGE_FRACTION = 0.02  # anti-aliased fringe kept around the core's bounding box, as a fraction of its side
FRINGE_LEVEL = 0.4  # ... and how bright a fringe pixel must be to count, once the digit is twice MNIST size
RESAMPLE = Image.Resampling.LANCZOS  # anti-aliased and sharp, like the strokes MNIST kept

LEVELS = np.arange(256, dtype=np.float64)
_COORDS = np.arange(SIDE, dtype=np.float32)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError)
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>")


@dataclass(frozen=True)
class Preprocessed:
    """The model input plus every intermediate image (uint8, 2-D) in pipeline order."""

    array: np.ndarray  # float32 [28, 28], 0..1, white ink on black
    mime: str
    steps: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Paper:
    """What the image's border says about the background: its gray level and noise."""

    level: float
    sigma: float


def preprocess(data: bytes, *, max_bytes: int, max_pixels: int) -> Preprocessed:
    """Decode `data` and turn it into an MNIST-style digit; raises BadImage, NoDigitFound or TooLarge."""
    check_size(data, max_bytes)
    image = open_image(data, max_pixels)
    mime = MIME[str(image.format)]
    gray = to_grayscale(load_first_frame(image))
    fast = already_mnist(gray, mime)
    if fast is not None:
        return fast
    steps: dict[str, np.ndarray] = {"decoded": gray}

    gray = even_out_lighting(gray)
    steps["lighting"] = gray
    ink, paper = to_white_on_black(gray, estimate_paper(gray))
    steps["ink"] = ink
    clean = suppress_background(ink, paper)
    steps["background_removed"] = _to_uint8(clean)
    top, bottom, left, right = ink_bounding_box(clean)
    cropped = clean[top:bottom, left:right]
    steps["cropped"] = _to_uint8(cropped)
    thickened = thicken_strokes(cropped, BOX)
    steps["thickened"] = _to_uint8(thickened)
    scaled = scale_to_box(thickened, BOX)
    steps["scaled"] = _to_uint8(scaled)
    array = center_by_mass(scaled, SIDE)
    steps["centered"] = _to_uint8(array)
    return Preprocessed(array=array, mime=mime, steps=steps)


def already_mnist(gray: np.ndarray, mime: str) -> Preprocessed | None:
    """The model input straight away for a digit that is MNIST-style already, else None (the full pipeline).

    Most uploads are exactly that (MNIST digits, the page's canvas): a 28x28 field on black paper, the ink's
    box 20 px long, strokes MNIST-wide, the centre of mass within half a pixel of the centre. Every step would
    hand such an image back unchanged: the border says paper 0 without noise, so lighting, polarity and
    background stay; cropping and scaling to 20 px keep the pixels; centring by mass moves them by zero. This
    checks just that and costs a fifth of the pipeline, which is most of a request's CPU time.
    """
    if gray.shape != (SIDE, SIDE) or gray[0].any() or gray[-1].any() or gray[:, 0].any() or gray[:, -1].any():
        return None
    rows, cols = _spans(gray)
    if rows.size == 0 or max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 != BOX:
        return None
    # With paper 0, suppress_background divides by 255 when the ink's core is saturated (its INK_QUANTILE
    # above SATURATED): more than a quarter of the ink at full white shows that without Otsu's split of the
    # ink (which only ever looks at levels >= MIN_CONTRAST).
    white, ink = np.count_nonzero(gray >= 255 - SATURATED), np.count_nonzero(gray >= MIN_CONTRAST)
    if white > (1 - INK_QUANTILE) * ink:
        clean = gray.astype(np.float32) / np.float32(255)
    else:
        clean = suppress_background(gray, Paper(level=0.0, sigma=0.0))  # what the pipeline computes here
    mass = float(clean.sum())
    centre = np.float32(SIDE / 2)
    if abs(float(clean.sum(axis=1) @ _COORDS) / mass - centre) >= 0.5:
        return None
    if abs(float(clean.sum(axis=0) @ _COORDS) / mass - centre) >= 0.5:
        return None
    cropped = clean[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if thicken_strokes(cropped, BOX) is not cropped:
        return None  # a hairline digit: the pipeline widens it
    shown = _to_uint8(clean)
    box = shown[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    steps = {"decoded": gray, "lighting": gray, "ink": gray, "background_removed": shown}
    steps.update(cropped=box, thickened=box, scaled=box, centered=shown)
    return Preprocessed(array=clean, mime=mime, steps=steps)


def check_size(data: bytes, max_bytes: int) -> None:
    """Refuse empty or oversized bodies before any decoding work."""
    if not data:
        raise BadImage("empty image: the request carried no bytes")
    if len(data) > max_bytes:
        raise TooLarge(f"image is {len(data)} bytes, the limit is {max_bytes}")


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Identify the format and read the header only, refusing images with too many pixels before decoding."""
    try:
        image = Image.open(io.BytesIO(data), formats=tuple(FORMATS))
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image has too many pixels: {exc}") from exc
    except _DECODE_ERRORS as exc:
        # Pillow names the in-memory file it was given ("<_io.BytesIO object at 0x...>"): not the caller's.
        reason = _OBJECT_REPR.sub("", str(exc)).strip()
        raise BadImage(f"not a readable image (accepted formats: {ACCEPTED}): {reason}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise TooLarge(f"image is {width}x{height} = {width * height} pixels, the limit is {max_pixels}")
    if width < 1 or height < 1:
        raise BadImage(f"image has no pixels ({width}x{height})")
    return image


def load_first_frame(image: Image.Image) -> Image.Image:
    """Decode the first frame, upright per its EXIF orientation; large JPEGs decode at a reduced scale."""
    if image.format in ("JPEG", "MPO"):
        # libjpeg scales by 1/2, 1/4 or 1/8 while decoding: far cheaper than shrinking afterwards.
        image.draft("L", (WORK_SIDE // 2, WORK_SIDE // 2))
    try:
        image.seek(0)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image has too many pixels: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise BadImage(f"image data is truncated or corrupt: {exc}") from exc
    return image


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Any mode -> 8-bit gray at the working size; transparency is composited onto white paper."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        wide = np.asarray(image, dtype=np.float32)
        # 16-bit images span 0..65535; 32-bit and float ones have no fixed range: 0..1, 0..255 or their own.
        peak = float(wide.max()) if wide.size else 0.0
        if image.mode.startswith("I;16"):
            top = 65535.0
        elif image.mode == "F" and peak <= 1:
            top = 1.0
        else:
            top = max(peak, 255.0)
        gray = Image.fromarray(np.clip(wide * (255 / top), 0, 255).astype(np.uint8))
    elif image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # A canvas drawing is black strokes on transparent pixels: transparent means paper.
        rgba = image.convert("RGBA")
        gray = Image.new("L", rgba.size, 255)
        gray.paste(rgba.convert("L"), mask=rgba.getchannel("A"))
    elif image.mode in ("1", "L", "P", "RGB"):
        gray = image.convert("L")
    else:  # CMYK, YCbCr, LAB, HSV, ...
        try:
            gray = image.convert("RGB").convert("L")
        except ValueError as exc:
            raise BadImage(f"unsupported image mode {image.mode}") from exc
    factor = -(-max(gray.size) // WORK_SIDE)
    if factor > 1:
        gray = gray.reduce(factor)
    return np.asarray(gray, dtype=np.uint8)


def estimate_paper(gray: np.ndarray) -> Paper:
    """The background's gray level and noise, from the border (a digit rarely touches all four edges)."""
    border = gray[_border(gray)]
    hist = histogram(border)
    level = quantile(hist, 0.5)
    deviation = np.abs(LEVELS - level)
    order = np.argsort(deviation, kind="stable")
    mad = float(deviation[order][np.searchsorted(np.cumsum(hist[order]), 0.5 * border.size)])
    return Paper(level=level, sigma=1.4826 * mad)  # the MAD of Gaussian noise is 0.6745 sigma


def _border(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a ring along the image's edges, a twentieth of its smaller side wide."""
    ring = max(1, min(gray.shape) // 20)
    edge = np.ones(gray.shape, dtype=bool)
    edge[ring:-ring, ring:-ring] = False
    rows, cols = np.nonzero(edge)
    return rows, cols


def even_out_lighting(gray: np.ndarray) -> np.ndarray:
    """Undo uneven light (a gradient across the page, darker corners): the paper seen along the border is
    fitted with a smooth quadratic surface, and each pixel is divided by it (light multiplies reflectance)."""
    height, width = gray.shape
    rows, cols = _border(gray)
    step = max(1, rows.size // BORDER_SAMPLES)
    rows, cols = rows[::step], cols[::step]
    values = gray[rows, cols].astype(np.float64)
    # Paper only: ink that touches the border is far from the border's median, so it is not fitted.
    deviation = np.abs(values - np.median(values))
    keep = deviation <= 3 * 1.4826 * float(np.median(deviation)) + EVEN_LIGHT
    if np.ptp(values[keep]) <= EVEN_LIGHT:
        return gray  # evenly lit already (every drawing, every MNIST digit)

    def terms(y: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
        return [np.ones_like(x * y), x, y, x * x, y * y, x * y]

    y, x = rows / height - 0.5, cols / width - 0.5
    design = np.stack(terms(y, x), axis=1)
    for _ in range(2):  # the second fit also drops the paper pixels the first could not explain (specks)
        if keep.sum() < values.size // 4:
            return gray  # too little paper along the border to tell how it is lit
        fit = design[keep]
        try:  # normal equations: 100x faster than lstsq for six unknowns
            coef = np.linalg.solve(fit.T @ fit, fit.T @ values[keep])
        except np.linalg.LinAlgError:
            return gray
        residual = np.abs(values - design @ coef)
        keep &= residual <= 3 * 1.4826 * float(np.median(residual[keep])) + 1
    grid_y = (np.arange(height, dtype=np.float32) / height - 0.5)[:, None]
    grid_x = (np.arange(width, dtype=np.float32) / width - 0.5)[None, :]
    c0, cx, cy, cxx, cyy, cxy = coef.astype(np.float32)
    surface = (c0 + cy * grid_y + cyy * grid_y**2) + (cx * grid_x + cxx * grid_x**2) + cxy * grid_y * grid_x
    # Inside the border the surface is extrapolated: never beyond the light the border actually saw.
    surface = np.clip(surface, values[keep].min(), values[keep].max())
    level = float(np.median(values[keep]))
    # On a dark background (light-on-dark ink) a ratio would only amplify noise: subtract there instead.
    flat = gray - surface + level if level < 128 else gray * (np.float32(level) / np.maximum(surface, 1))
    return np.clip(flat, 0, 255).astype(np.uint8)


def to_white_on_black(gray: np.ndarray, paper: Paper) -> tuple[np.ndarray, Paper]:
    """Make the ink bright: if the pixels that clearly differ from the paper are mostly darker, invert."""
    hist = histogram(gray)
    # Only what could be ink counts: paper a few levels off (noise, light not quite evened out) covers far
    # more pixels than a small digit does, and would outvote it.
    margin = NOISE_SIGMAS * paper.sigma + MIN_CONTRAST
    darker = float(hist @ np.maximum(paper.level - margin - LEVELS, 0))
    lighter = float(hist @ np.maximum(LEVELS - paper.level - margin, 0))
    if darker > lighter:
        return 255 - gray, Paper(level=255 - paper.level, sigma=paper.sigma)
    return gray, paper


def suppress_background(ink: np.ndarray, paper: Paper) -> np.ndarray:
    """Stretch paper..ink to 0..1: the paper (and its noise) becomes 0, the ink's core 1, edges stay gray."""
    low = paper.level + NOISE_SIGMAS * paper.sigma
    # Ink is what stands clearly above the paper; the Otsu split of those pixels finds the strokes' core
    # whatever share of the image they cover (a tight crop or a small digit on a large page).
    candidates = histogram(ink) * (low + MIN_CONTRAST <= LEVELS)
    if not candidates.any():
        raise NoDigitFound(
            f"no digit found: nothing in the image differs from the paper by {MIN_CONTRAST} gray levels"
        )
    high = quantile(candidates * (otsu_threshold(candidates) <= LEVELS), INK_QUANTILE)
    if high >= 255 - SATURATED:
        # Drawings and MNIST digits already have a full-white core: stretching them by a few levels would
        # only nudge their centre of mass.
        high = 255.0
    stretched = (ink.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(stretched, 0, 1, out=stretched)


def histogram(gray: np.ndarray) -> np.ndarray:
    """Pixel count per gray level (256 bins): the statistics below work on it, not on the pixels."""
    return np.bincount(gray.ravel(), minlength=256)


def quantile(hist: np.ndarray, q: float) -> float:
    """The gray level below which a fraction `q` of the histogram's pixels lie."""
    cumulative = np.cumsum(hist)
    return float(np.searchsorted(cumulative, q * cumulative[-1]))


def otsu_threshold(hist: np.ndarray) -> float:
    """Otsu's threshold: the level that best splits the histogram into two classes (upper class >= it)."""
    weight = np.cumsum(hist, dtype=np.float64)
    mass = np.cumsum(hist * LEVELS)
    total, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * weight - total * mass) ** 2 / (weight * (total - weight))
    between[~np.isfinite(between)] = -1
    return float(np.argmax(between) + 1)


def ink_bounding_box(clean: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the digit: its core without isolated specks, plus the faint fringe."""
    core = (clean >= 0.5).astype(np.uint8)
    rows, cols = _spans(core)
    if rows.size:  # count neighbours only where there is ink at all: the rest of a photo is empty
        window = core[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        sure = window & (_neighbour_count(window) >= MIN_NEIGHBOURS)
        sure_rows, sure_cols = _spans(sure)
        rows, cols = sure_rows + rows[0], sure_cols + cols[0]
    height, width = clean.shape
    min_span = max(3, MIN_DIGIT_FRACTION * max(height, width))
    if rows.size == 0 or max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 < min_span:
        raise NoDigitFound("no digit found: only specks or noise")
    span = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    # At MNIST size the faint edge pixels are MNIST's own anti-aliasing and belong in its 20 px box; in a
    # larger image they are blur, and the box should hug the strokes (NIST's scans were binary).
    level = FRINGE_LEVEL * min(max(span / BOX - 1, 0), 1)
    pad = 2 + round(FRINGE_FRACTION * span)
    top, bottom = max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, height)
    left, right = max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, width)
    rows, cols = _spans(clean[top:bottom, left:right] > level)
    return top + int(rows[0]), top + int(rows[-1]) + 1, left + int(cols[0]), left + int(cols[-1]) + 1


def _spans(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the rows and of the columns that hold any set pixel."""
    return np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))


def _neighbour_count(mask: np.ndarray) -> np.ndarray:
    """How many pixels of each 3x3 neighbourhood are set (the pixel itself included)."""
    padded = np.pad(mask, 1)
    height, width = mask.shape
    count = np.zeros(mask.shape, dtype=np.uint8)
    for dy in range(3):
        for dx in range(3):
            count += padded[dy : dy + height, dx : dx + width]
    return count


def stroke_width(mask: np.ndarray) -> float:
    """Mean width of the strokes in a binary mask, in pixels: twice the area over the perimeter."""
    # Edges between ink and background, the image's own edges included (outside is background).
    perimeter = (
        np.count_nonzero(mask[1:] != mask[:-1])
        + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
        + np.count_nonzero(mask[0])
        + np.count_nonzero(mask[-1])
        + np.count_nonzero(mask[:, 0])
        + np.count_nonzero(mask[:, -1])
    )
    return 2 * float(np.count_nonzero(mask)) / max(float(perimeter), 1.0)


def thicken_strokes(digit: np.ndarray, box: int) -> np.ndarray:
    """Widen strokes that would come out thinner than MNIST's (a fine pen, a thin brush) once scaled to `box`.

    Models trained on MNIST have never seen hairlines: they read a thin 7 as noise. MNIST's own digits are
    left alone (their strokes are at least MIN_STROKE wide).
    """
    scale = box / max(digit.shape)
    # Closing first: dithered or speckled strokes would otherwise measure as a swarm of hairlines.
    core = (digit >= 0.5).astype(np.float32)
    closed = 1 - _dilate(1 - _dilate(core, 1), 1)
    width = stroke_width(closed >= 0.5) * scale
    if width >= MIN_STROKE:
        return digit
    radius = max(1, round((TARGET_STROKE - width) / scale / 2))
    return _dilate(np.pad(digit, radius), radius)


def _dilate(image: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level dilation by a (2 radius + 1) square, separably and with doubling shifts.

    Pillow's MaxFilter does the same but costs O(radius^2) per pixel: 0.2 s at radius 12 on a 300 px crop.
    """
    for axis in (0, 1):
        covered, step = 0, 1
        while covered < radius:
            shift = min(step, radius - covered)
            grown = image.copy()
            ahead = [slice(None)] * 2
            behind = [slice(None)] * 2
            ahead[axis], behind[axis] = slice(shift, None), slice(None, -shift)
            np.maximum(grown[tuple(ahead)], image[tuple(behind)], out=grown[tuple(ahead)])
            np.maximum(grown[tuple(behind)], image[tuple(ahead)], out=grown[tuple(behind)])
            image, covered, step = grown, covered + shift, step * 2
    return image


def scale_to_box(digit: np.ndarray, box: int) -> np.ndarray:
    """Resize so the longer side is `box` px, keeping the aspect ratio, with anti-aliasing."""
    height, width = digit.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return digit
    resized = Image.fromarray(digit.astype(np.float32)).resize(size, RESAMPLE)
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 1)


def center_by_mass(digit: np.ndarray, side: int) -> np.ndarray:
    """Place the digit in a side x side field so its centre of mass is at the field's centre, as MNIST did."""
    height, width = digit.shape
    mass = float(digit.sum())
    rows = np.arange(height, dtype=np.float32)
    cols = np.arange(width, dtype=np.float32)
    cy = float(digit.sum(axis=1) @ rows) / mass
    cx = float(digit.sum(axis=0) @ cols) / mass
    top = min(max(round(side / 2 - cy), 0), side - height)
    left = min(max(round(side / 2 - cx), 0), side - width)
    field_ = np.zeros((side, side), dtype=np.float32)
    field_[top : top + height, left : left + width] = digit
    return field_


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """A 0..1 float image as 0..255 bytes for display."""
    return np.rint(array * 255).astype(np.uint8)
