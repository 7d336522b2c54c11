"""Dog and cat heads found by template matching on gradient-orientation features.

Features: HOG-like cells (6x6 pixels, 9 unsigned orientation bins, each cell normalised by
the gradient energy of the 3x3 cells around it), so colour, contrast and fur texture matter
little and outlines matter most.

Templates: every image in ``<templates>/<kind>/`` (kind ``dog``, ``cat`` or ``big_cat``) is a
head crop with :data:`TEMPLATE_CONTEXT` of its size around the head; it and its mirror image
are turned into a cell grid for each window shape (a few aspect ratios). A kind's matching
template is the whitened mean of its crops (linear discriminant analysis against natural-image
statistics, Hariharan, Malik and Ramanan 2012): raw correlation with one crop rewards any
strong edge, the whitened template rewards what heads share and backgrounds do not. The
background statistics (``background.npz`` in the template folder: mean cell and the covariance
of cells at every offset) are measured once on photos, so a crop dropped into a kind folder
changes the template on the next run without anything else to rebuild.

Search: a scale pyramid of the image's cell map, every window of every shape scored, scores in
standard deviations of the background (comparable across shapes and scales), overlapping
windows merged by non-maximum suppression.

Cats: OpenCV's frontal cat-face cascade (:func:`detect_cat_faces`) is a second, independent
detector; `unit ingest animals` asks it first for cat classes and accepts its face from
:data:`DEFAULT_CAT_FACE_THRESHOLD` up, else falls back to the templates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from preprocessing.errors import IngestError
from preprocessing.images import RejectedImage, decode_image
from preprocessing.output import sha256_bytes
from preprocessing.sources import list_folder

KINDS = ("dog", "cat", "big_cat")
#: The shipped templates (cut from the development images of tests/fixtures/animal_heads.csv).
DEFAULT_TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "heads"
BACKGROUND_FILE = "background.npz"
CELL = 6
BINS = 9
#: Window shapes (rows, columns of cells): square heads, wide (profiles, hanging ears), tall.
GRIDS = ((6, 6), (5, 7), (7, 5))
#: A template holds the head plus this share of its size on each side: the outline against the
#: background is the strongest cue.
TEMPLATE_CONTEXT = 0.15
#: Pyramid: head side from SMALLEST_HEAD of the image's shorter side up to all of it.
SMALLEST_HEAD = 0.15
LEVELS_PER_OCTAVE = 4
#: A window overlapping a better one by more than this IoU is dropped.
NMS_IOU = 0.3
#: Minimum score (background standard deviations) to accept a head; chosen by
#: bench/head_detection.py on the development rows.
DEFAULT_THRESHOLD = 5.81
#: Regularisation of the background covariance (its diagonal is about 0.01..0.05).
_RIDGE = 0.01
# Offsets kept in the background statistics: enough for the largest grid.
_MAX_OFFSET = max(max(grid) for grid in GRIDS)


#: ImageNet WordNet IDs by kind: the dog synsets are one contiguous block, so are the cats.
_WNID_KINDS = (("n02085620", "n02113978", "dog"), ("n02123045", "n02124075", "cat"), ("n02125311", "n02130308", "big_cat"))


def kind_of_wnid(wnid: str) -> str | None:
    """``dog``, ``cat`` or ``big_cat`` for an ImageNet dog or cat synset; None otherwise."""
    return next((kind for first, last, kind in _WNID_KINDS if first <= wnid <= last), None)


def matched_kinds(kind: str | None) -> tuple[str, ...] | None:
    """Template kinds a head of ``kind`` is matched with: cats of both sizes share their few templates."""
    if kind is None:
        return None
    return ("dog",) if kind == "dog" else ("cat", "big_cat")


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) if image.ndim == 3 else image.astype(np.float32)


def orientation_cells(gray: np.ndarray) -> np.ndarray:
    """HxW float32 gray -> (H // CELL, W // CELL, BINS) normalised orientation histograms."""
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=1)
    magnitude, angle = cv2.cartToPolar(gx, gy)
    # Unsigned orientation: a light head on a dark ground looks like a dark one on a light ground.
    position = (angle % np.pi) * (BINS / np.pi)
    rows, cols = gray.shape[0] // CELL, gray.shape[1] // CELL
    magnitude, position = magnitude[: rows * CELL, : cols * CELL], position[: rows * CELL, : cols * CELL]
    cells = np.empty((rows, cols, BINS), np.float32)
    for orientation in range(BINS):
        distance = np.abs(position - orientation)
        distance = np.minimum(distance, BINS - distance)
        vote = np.maximum(1 - distance, 0) * magnitude  # linear interpolation between the two nearest bins
        cells[:, :, orientation] = cv2.resize(vote, (cols, rows), interpolation=cv2.INTER_AREA)
    energy = cv2.boxFilter((cells**2).sum(axis=2), -1, (3, 3), normalize=True, borderType=cv2.BORDER_REFLECT)
    cells /= np.sqrt(energy + 1e-3)[:, :, None]
    return np.minimum(cells, 0.5)


def crop_cells(crop: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A template crop (head plus context) as a flat cell grid of the given shape."""
    rows, cols = grid
    # One cell of border each side: the gradient at the crop's edge is not the head's.
    resized = cv2.resize(_gray(crop), ((cols + 2) * CELL, (rows + 2) * CELL), interpolation=cv2.INTER_AREA)
    return orientation_cells(resized)[1 : rows + 1, 1 : cols + 1].reshape(-1)


@dataclass(frozen=True)
class Background:
    """Natural-image statistics of the cells: mean and covariance at every cell offset."""

    mean: np.ndarray  # (BINS,)
    autocovariance: np.ndarray  # (2 * _MAX_OFFSET - 1, 2 * _MAX_OFFSET - 1, BINS, BINS), index offset + _MAX_OFFSET - 1

    def of_grid(self, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of a flat grid-sized window."""
        rows, cols = grid
        centre = _MAX_OFFSET - 1
        positions = [(row, col) for row in range(rows) for col in range(cols)]
        blocks = [[self.autocovariance[centre + r2 - r1, centre + c2 - c1] for r2, c2 in positions] for r1, c1 in positions]
        return np.tile(self.mean, rows * cols), np.block(blocks)


def measure_background(images: Iterable[np.ndarray]) -> Background:
    """Background statistics from the cell maps of photos at every pyramid level."""
    total, count = np.zeros(BINS), 0
    maps = [cells for image in images for cells in _pyramid_cells(_gray(image))]
    for cells in maps:
        total += cells.reshape(-1, BINS).sum(axis=0)
        count += cells.shape[0] * cells.shape[1]
    mean = total / count
    size = 2 * _MAX_OFFSET - 1
    products = np.zeros((size, size, BINS, BINS))
    pairs = np.zeros((size, size))
    for cells in maps:
        centred = cells.astype(np.float64) - mean
        rows, cols = centred.shape[:2]
        for dy in range(-_MAX_OFFSET + 1, _MAX_OFFSET):
            for dx in range(-_MAX_OFFSET + 1, _MAX_OFFSET):
                first = centred[max(0, -dy) : rows - max(0, dy), max(0, -dx) : cols - max(0, dx)].reshape(-1, BINS)
                second = centred[max(0, dy) : rows - max(0, -dy), max(0, dx) : cols - max(0, -dx)].reshape(-1, BINS)
                products[dy + _MAX_OFFSET - 1, dx + _MAX_OFFSET - 1] += first.T @ second
                pairs[dy + _MAX_OFFSET - 1, dx + _MAX_OFFSET - 1] += len(first)
    return Background(mean, products / np.maximum(pairs, 1)[:, :, None, None])


def save_background(background: Background, path: Path) -> None:
    np.savez_compressed(path, mean=background.mean.astype(np.float32), autocovariance=background.autocovariance.astype(np.float32))


def load_background(path: Path) -> Background:
    try:
        with np.load(path) as stored:
            background = Background(stored["mean"].astype(np.float64), stored["autocovariance"].astype(np.float64))
    except (OSError, KeyError, ValueError) as exc:
        raise IngestError(f"{path}: unreadable background statistics: {exc}") from None
    expected = (2 * _MAX_OFFSET - 1, 2 * _MAX_OFFSET - 1, BINS, BINS)
    if background.mean.shape != (BINS,) or background.autocovariance.shape != expected:
        raise IngestError(f"{path}: background statistics of the wrong shape {background.autocovariance.shape}, expected {expected}")
    return background


@dataclass(frozen=True)
class Template:
    name: str  # path below the template folder
    image: str  # file name without extension: the photo the crop was cut from
    kind: str
    cells: dict[tuple[int, int], np.ndarray]  # grid -> (2, features): the crop and its mirror image


@dataclass(frozen=True)
class TemplateBank:
    templates: tuple[Template, ...]
    background: Background
    sha256: tuple[str, ...]  # of every file in the folder, for the recipe hash
    _whitening: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]  # grid -> mean, covariance, its regularised inverse

    def kinds(self) -> set[str]:
        return {template.kind for template in self.templates}

    def matcher(self, kinds: Sequence[str] | None = None, exclude: str | None = None) -> dict[tuple[int, int], np.ndarray]:
        """Grid -> whitened template (unit standard deviation on the background) of the chosen kinds.

        ``exclude``: leave out the crops cut from the photo of that name without extension.
        """
        chosen = [t for t in self.templates if (kinds is None or t.kind in kinds) and t.image != exclude]
        if not chosen:
            raise IngestError(f"no head templates of kind {', '.join(kinds or KINDS)}")
        weights = {}
        for grid, (mean, covariance, inverse) in self._whitening.items():
            positives = np.concatenate([t.cells[grid] for t in chosen]).mean(axis=0)
            weight = inverse @ (positives - mean)
            weights[grid] = weight / np.sqrt(weight @ covariance @ weight)
        return weights


def load_template_bank(folder: str | Path) -> TemplateBank:
    """Every image in ``folder/<kind>/`` becomes a template of that kind; ``folder/background.npz`` is required."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"{folder}: template folder not found")
    background_path = folder / BACKGROUND_FILE
    if not background_path.is_file():
        raise IngestError(f"{folder}: no {BACKGROUND_FILE} (copy the one from {DEFAULT_TEMPLATES})")
    background = load_background(background_path)
    templates: list[Template] = []
    hashes = [sha256_bytes(background_path.read_bytes())]
    for file in list_folder(folder).files:
        kind, _, rest = file.relative.partition("/")
        if kind not in KINDS or not rest:
            raise IngestError(f"{file.source}: a template belongs in a kind folder below {folder} ({', '.join(KINDS)})")
        data = file.read()
        try:
            crop = decode_image(data)
        except RejectedImage as exc:
            raise IngestError(f"{file.source}: unusable template: {exc}") from None
        mirrored = np.ascontiguousarray(crop[:, ::-1])
        cells = {grid: np.stack([crop_cells(crop, grid), crop_cells(mirrored, grid)]) for grid in GRIDS}
        templates.append(Template(file.relative, Path(rest).stem, kind, cells))
        hashes.append(sha256_bytes(data))
    if not templates:
        raise IngestError(f"{folder}: no template images found (expected {', '.join(f'{kind}/' for kind in KINDS)} folders)")
    whitening = {}
    for grid in GRIDS:
        mean, covariance = background.of_grid(grid)
        whitening[grid] = (mean, covariance, np.linalg.inv(covariance + _RIDGE * np.eye(len(covariance))))
    return TemplateBank(tuple(templates), background, tuple(hashes), whitening)


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # head box x0, y0, x1, y1 in source pixels (context removed), inside the image
    score: float  # standard deviations above the background


def _pyramid_scales(height: int, width: int) -> list[float]:
    """Image scales at which a head of SMALLEST_HEAD .. 1 of the shorter side fills a 6-cell window."""
    window = 6 * CELL / (1 + 2 * TEMPLATE_CONTEXT)  # head side in pixels at the window's scale
    levels = int(np.ceil(-np.log2(SMALLEST_HEAD) * LEVELS_PER_OCTAVE)) + 1
    shorter = min(height, width)
    return [window / (2 ** (-level / LEVELS_PER_OCTAVE) * shorter) for level in range(levels)]


def _pyramid_cells(gray: np.ndarray) -> Iterable[np.ndarray]:
    for _, cells in _pyramid(gray):
        yield cells


def _pyramid(gray: np.ndarray) -> Iterable[tuple[float, np.ndarray]]:
    height, width = gray.shape
    smallest = max(max(grid) for grid in GRIDS) + 2
    for scale in _pyramid_scales(height, width):
        level_width, level_height = round(width * scale), round(height * scale)
        if min(level_width, level_height) < smallest * CELL:
            continue
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        yield scale, orientation_cells(cv2.resize(gray, (level_width, level_height), interpolation=interpolation))


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / ((box[2] - box[0]) * (box[3] - box[1]) + areas - inter)


def detect_heads(image: np.ndarray, matcher: dict[tuple[int, int], np.ndarray], *, limit: int = 5) -> list[Detection]:
    """Head candidates in ``image`` (RGB), best first, after non-maximum suppression (see :meth:`TemplateBank.matcher`)."""
    gray = _gray(image)
    height, width = gray.shape
    boxes, scores = [], []
    context = TEMPLATE_CONTEXT / (1 + 2 * TEMPLATE_CONTEXT)
    for scale, cells in _pyramid(gray):
        for (rows, cols), weight in matcher.items():
            view = np.lib.stride_tricks.sliding_window_view(cells, (rows, cols), axis=(0, 1))  # y, x, bins, rows, cols
            response = np.einsum("yxbrc,rcb->yx", view, weight.reshape(rows, cols, BINS), optimize=True)
            # A few best windows per level and shape are enough for the suppression below.
            best = np.argpartition(response, -limit * 4, axis=None)[-limit * 4 :] if response.size > limit * 4 else np.arange(response.size)
            ys, xs = np.unravel_index(best, response.shape)
            side_x, side_y = cols * CELL / scale, rows * CELL / scale
            x0, y0 = xs * CELL / scale + side_x * context, ys * CELL / scale + side_y * context
            boxes.append(np.stack([x0, y0, x0 + side_x * (1 - 2 * context), y0 + side_y * (1 - 2 * context)], axis=1))
            scores.append(response[ys, xs])
    if not boxes:
        raise RejectedImage(f"image too small for head matching ({width}x{height})")
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    kept: list[int] = []
    for index in np.argsort(all_scores)[::-1]:
        if not kept or _box_iou(all_boxes[index], all_boxes[kept]).max() <= NMS_IOU:
            kept.append(int(index))
            if len(kept) == limit:
                break
    return [
        Detection(
            (max(0, round(x0)), max(0, round(y0)), min(width, round(x1)), min(height, round(y1))),
            round(float(all_scores[index]), 3),
        )
        for index in kept
        for x0, y0, x1, y1 in [all_boxes[index]]
    ]


# Cat faces: OpenCV's frontal cat-face cascade, the detector's second cue for cats of both sizes.
#: Haar cascade shipped with OpenCV (``cv2.data.haarcascades``; OpenCV 5 ships none, hence the
#: ``opencv-python-headless<5`` pin). On the development cats this one and
#: ``haarcascade_frontalcatface_extended.xml`` find the one same face and nothing wrong; on the
#: development dogs this one's wrong faces score lower (best 0.56 against 2.33) and its two best
#: faces are right (bench/head_detection.py --cat-faces). One cascade, not both: each costs
#: about twice the template search.
CAT_FACE_CASCADE = "haarcascade_frontalcatface.xml"
#: Template kinds whose photos go through the cascade too.
CAT_FACE_KINDS = frozenset({"cat", "big_cat"})
#: The cascade sees the photo shrunk to this shorter side (histogram-equalised): most of its
#: cost is the number of windows, and a face of SMALLEST_HEAD of the side still spans 30 pixels.
CASCADE_SIDE = 200
CASCADE_SCALE_STEP = 1.1
#: Overlapping hits merged into one face; a face needs this many more hits to count.
CASCADE_NEIGHBOURS = 1
#: Minimum cascade score (the last stage's weight, OpenCV's ``levelWeights``) to accept a cat
#: face; chosen by bench/head_detection.py on the development cats: the lowest score with
#: development precision >= 0.9, which with one development face found is that face's score.
DEFAULT_CAT_FACE_THRESHOLD = 3.047


@lru_cache(maxsize=1)
def cat_face_cascade() -> cv2.CascadeClassifier:
    """The loaded :data:`CAT_FACE_CASCADE` (once per process: a classifier does not pickle)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if folder is None or not hasattr(cv2, "CascadeClassifier"):
        raise IngestError(f"OpenCV {cv2.__version__} has no cat-face cascade (cv2.data.haarcascades): install opencv-python-headless<5")
    cascade = cv2.CascadeClassifier(str(Path(folder) / CAT_FACE_CASCADE))
    if cascade.empty():
        raise IngestError(f"{Path(folder) / CAT_FACE_CASCADE}: cat-face cascade missing or unreadable")
    return cascade


def detect_cat_faces(image: np.ndarray) -> list[Detection]:
    """Cat faces in ``image`` (RGB) by :data:`CAT_FACE_CASCADE`, best score first; boxes in source pixels."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    height, width = gray.shape[:2]
    shrink = min(1.0, CASCADE_SIDE / min(height, width))
    if shrink < 1:
        gray = cv2.resize(gray, (max(1, round(width * shrink)), max(1, round(height * shrink))), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(np.ascontiguousarray(gray, dtype=np.uint8))
    side = max(24, round(SMALLEST_HEAD * min(gray.shape)))
    if min(gray.shape) < side:
        return []
    faces, _, weights = cat_face_cascade().detectMultiScale3(
        gray, scaleFactor=CASCADE_SCALE_STEP, minNeighbors=CASCADE_NEIGHBOURS, minSize=(side, side), outputRejectLevels=True
    )
    found = []
    for (x, y, w, h), weight in zip(np.reshape(faces, (-1, 4)), np.ravel(weights)):
        box = (max(0, round(x / shrink)), max(0, round(y / shrink)), min(width, round((x + w) / shrink)), min(height, round((y + h) / shrink)))
        found.append(Detection(box, round(float(weight), 3)))
    return sorted(found, key=lambda detection: -detection.score)
