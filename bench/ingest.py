"""Ingestion throughput: ``ingest_folders`` against a plain OpenCV decode-resize-encode loop.

Generates 640x480 JPEG inputs in a temporary folder, then times, for each worker count,
(a) the baseline: ``cv2.imread`` -> centre crop -> ``cv2.resize`` -> ``cv2.imencode`` -> write,
run by a process pool of the same size, and (b) the real pipeline (hashing, validation, EXIF,
manifest, report, atomic swap included), and (c) a re-run of the pipeline on unchanged input.

    PYTHONPATH=. python bench/ingest.py --images 400 --size 256x256
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from preprocessing.folders import ingest_folders
from preprocessing.images import cover_crop_box
from preprocessing.output import JPEG_QUALITY, PNG_COMPRESSION
from preprocessing.pipeline import IngestOptions, default_workers


def make_inputs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Photo-like 640x480 JPEGs: smooth colour fields plus noise, so they compress like real images."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = cv2.resize(coarse, (640, 480), interpolation=cv2.INTER_CUBIC)
        image = cv2.add(image, rng.integers(0, 24, image.shape, dtype=np.uint8))
        path = folder / f"{index:05d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def baseline_one(task: tuple[str, str, int, int, str]) -> None:
    source, target, width, height, image_format = task
    image = cv2.imread(source, cv2.IMREAD_COLOR)
    x, y, box_width, box_height = cover_crop_box(image.shape[1], image.shape[0], width, height)
    resized = cv2.resize(image[y : y + box_height, x : x + box_width], (width, height), interpolation=cv2.INTER_AREA)
    params = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION] if image_format == "png" else [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    ok, encoded = cv2.imencode(f".{image_format}", resized, params)
    Path(target).write_bytes(encoded.tobytes())


def run_baseline(paths: list[Path], out: Path, size: tuple[int, int], image_format: str, workers: int) -> float:
    out.mkdir(parents=True)
    tasks = [(str(path), str(out / f"{path.stem}.{image_format}"), size[0], size[1], image_format) for path in paths]
    start = time.perf_counter()
    if workers == 1:
        for task in tasks:
            baseline_one(task)
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(baseline_one, tasks, chunksize=8)
    return time.perf_counter() - start


def run_pipeline(folder: Path, out: Path, size: tuple[int, int], image_format: str, workers: int, reuse: bool) -> float:
    options = IngestOptions(image_format=image_format, workers=workers, progress=False, reuse_previous=reuse)
    start = time.perf_counter()
    ingest_folders({"bench": str(folder)}, out, size=size, options=options)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", default="256x256", help="output WxH (default 256x256)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    args = parser.parse_args()
    width, _, height = args.size.partition("x")
    size = (int(width), int(height or width))
    cores = default_workers()
    worker_counts = sorted({1, cores})
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch:
        root = Path(scratch)
        inputs = root / "inputs"
        inputs.mkdir()
        paths = make_inputs(inputs, args.images)
        print(f"{args.images} JPEG inputs 640x480 -> {size[0]}x{size[1]} {args.format}, {cores} cores; best of {args.repeats}")
        print(f"{'workers':>7} {'baseline img/s':>15} {'pipeline img/s':>15} {'ratio':>6} {'re-run img/s':>13}")
        for workers in worker_counts:
            baseline, pipeline, rerun = [], [], []
            for repeat in range(args.repeats):
                baseline.append(run_baseline(paths, root / f"baseline-{workers}-{repeat}", size, args.format, workers))
                out = root / f"pipeline-{workers}-{repeat}"
                pipeline.append(run_pipeline(inputs, out, size, args.format, workers, reuse=False))
                rerun.append(run_pipeline(inputs, out, size, args.format, workers, reuse=True))
            base_rate, pipe_rate, rerun_rate = (args.images / min(times) for times in (baseline, pipeline, rerun))
            print(f"{workers:>7} {base_rate:>15.1f} {pipe_rate:>15.1f} {pipe_rate / base_rate:>6.2f} {rerun_rate:>13.1f}")


if __name__ == "__main__":
    main()
