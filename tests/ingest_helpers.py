"""Helpers and fixtures for the ingest tests: small image files, options, a real S3 server.

Test modules import what they use: ``from ingest_helpers import s3_endpoint, ...``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from servers import free_port
from preprocessing.output import read_manifest
from preprocessing.pipeline import IngestOptions

# Credentials for the local moto server only; the S3 tests also check they never leak.
FAKE_ACCESS_KEY = "AKIAINGESTTESTKEY0001"
FAKE_SECRET_KEY = "ingest-test-secret-must-never-be-logged"


def serial_options(**changes: Any) -> IngestOptions:
    """One process, no progress bar: fast and quiet for tests."""
    return IngestOptions(**{"workers": 1, "progress": False, **changes})


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (compresses and resizes like a photo, unlike pure noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    return np.asarray(image)


def encode(image: np.ndarray | Image.Image, format: str, **save: Any) -> bytes:
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format, **save)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def report(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / "report.json").read_text(encoding="utf-8"))


def manifest_by_source(out_dir: Path) -> dict[str, dict[str, Any]]:
    return {entry["source"]: entry for entry in read_manifest(out_dir / "manifest.jsonl")}


def rejections(out_dir: Path) -> dict[str, str]:
    """Rejected source -> reason."""
    return {item["source"]: item["reason"] for item in report(out_dir)["rejected"]}


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file below root with its content: compares whole data sets byte for byte."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto_server) over HTTP on 127.0.0.1, for the whole session."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on {endpoint}")
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials through the standard chain (environment variables)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")


def true_box(row: dict[str, str]) -> tuple[int, int, int, int]:
    """The hand-drawn head box of a row of tests/fixtures/animal_heads.csv."""
    x0, y0, x1, y1 = (int(row[key]) for key in ("x0", "y0", "x1", "y1"))
    return x0, y0, x1, y1


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    width, height = max(0, min(a[2], b[2]) - max(a[0], b[0])), max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
