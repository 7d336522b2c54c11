"""Evaluation metrics as pure functions of arrays: no files, no models, no tracking.

Image metrics take 8-bit images, ``(H, W, C)`` or ``(H, W)`` uint8 arrays, because the
paper's paired metric is defined on 0-255 colour values; refusing other dtypes keeps a
[-1, 1] or [0, 1] tensor from being scored on the wrong scale by accident.

* :func:`pixel_accuracy` is the paper's satellite->map metric (UNIT, section 4; CycleGAN's
  maps protocol): a pixel is correct when every channel is within ``tolerance`` (16) of the
  ground truth.
* :func:`l1_error` is the mean absolute difference on a 0-1 scale (levels / 255).
* :func:`psnr` is in dB with peak 255, capped at :data:`PSNR_CAP_DB` so that identical
  images give a finite number (metrics files are JSON, which has no infinity).
* :func:`frechet_distance` (FID) and :func:`kernel_distance` (KID) compare two sets of
  feature vectors, e.g. Inception pool features of real and translated images.
* :func:`classification_accuracy` scores a classifier on a labelled test set (domain adaptation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

PSNR_CAP_DB = 100.0


def _as_uint8_pair(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    for name, array in (("prediction", prediction), ("truth", truth)):
        if array.dtype != np.uint8:
            raise ValueError(f"{name}: expected a uint8 image (0-255), got dtype {array.dtype}")
        if array.ndim not in (2, 3):
            raise ValueError(f"{name}: expected an (H, W) or (H, W, C) image, got shape {array.shape}")
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")
    if prediction.size == 0:
        raise ValueError("empty images")
    return prediction.astype(np.int16), truth.astype(np.int16)


def pixel_accuracy(prediction: np.ndarray, truth: np.ndarray, tolerance: int = 16) -> float:
    """Fraction of pixels whose colour is within ``tolerance`` of the truth in every channel."""
    if not 0 <= tolerance <= 255:
        raise ValueError(f"tolerance must be 0..255, got {tolerance}")
    prediction, truth = _as_uint8_pair(prediction, truth)
    close = np.abs(prediction - truth) <= tolerance
    if close.ndim == 3:
        close = close.all(axis=-1)
    return float(close.mean())


def l1_error(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute difference of two images, in 0-1 units (0 = identical, 1 = black vs white)."""
    prediction, truth = _as_uint8_pair(prediction, truth)
    return float(np.abs(prediction - truth).mean() / 255.0)


def psnr(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (peak 255), at most :data:`PSNR_CAP_DB`."""
    prediction, truth = _as_uint8_pair(prediction, truth)
    mse = float(np.square(prediction.astype(np.float64) - truth).mean())
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * np.log10(255.0**2 / mse))


def _to_numpy(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on a GPU
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype == object:
        raise ValueError(f"{name}: expected numbers, got objects")
    return array


def classification_accuracy(logits_or_predictions: Any, labels: Any) -> float:
    """Fraction of correct predictions.

    ``logits_or_predictions``: ``(N, classes)`` scores (the arg max is the prediction) or
    ``(N,)`` class indices; ``labels``: ``(N,)`` class indices. Arrays, lists or tensors.
    """
    scores = _to_numpy(logits_or_predictions, "logits_or_predictions")
    truth = _to_numpy(labels, "labels")
    if truth.ndim != 1:
        raise ValueError(f"labels: expected shape (N,), got {truth.shape}")
    if scores.ndim == 2:
        predicted = scores.argmax(axis=1)
    elif scores.ndim == 1:
        if not np.all(np.equal(np.mod(scores, 1), 0)):
            raise ValueError("logits_or_predictions: a 1-D input must hold class indices (whole numbers)")
        predicted = scores
    else:
        raise ValueError(f"logits_or_predictions: expected (N, classes) or (N,), got shape {scores.shape}")
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions but {len(truth)} labels")
    if len(truth) == 0:
        raise ValueError("no samples to score")
    return float(np.mean(predicted.astype(np.int64) == truth.astype(np.int64)))


def _features(values: Any, name: str) -> np.ndarray:
    array = _to_numpy(values, name).astype(np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected (N, D) feature vectors, got shape {array.shape}")
    if len(array) < 2:
        raise ValueError(f"{name}: need at least 2 feature vectors, got {len(array)}")
    return array


def frechet_distance(features_a: Any, features_b: Any) -> float:
    """FID: |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)) of two (N, D) feature sets.

    With centred features X_a, X_b (rows), S_a S_b has the same non-zero eigenvalues as
    (X_a X_b^T)(X_a X_b^T)^T / ((N_a-1)(N_b-1)), so Tr((S_a S_b)^(1/2)) is the sum of the
    singular values of X_a X_b^T over sqrt((N_a-1)(N_b-1)); they are taken from R_a R_b^T
    (QR factors, at most D x D). Exact, no matrix square root (no complex round-off, no
    scipy), and cheap when there are fewer images than feature dimensions.
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    centred_a, centred_b = a - mean_a, b - mean_b
    scale_a, scale_b = len(a) - 1, len(b) - 1
    r_a, r_b = np.linalg.qr(centred_a, mode="r"), np.linalg.qr(centred_b, mode="r")
    trace_sqrt = np.linalg.svd(r_a @ r_b.T, compute_uv=False).sum() / np.sqrt(scale_a * scale_b)
    distance = (np.square(mean_a - mean_b).sum() + np.square(centred_a).sum() / scale_a
                + np.square(centred_b).sum() / scale_b - 2.0 * trace_sqrt)
    return max(float(distance), 0.0)


def kernel_distance(features_a: Any, features_b: Any) -> float:
    """KID: unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3.

    Computed over the whole sets (Binkowski et al. average it over random subsets of
    1000; for test sets of this size the full-set estimate has the same expectation).
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    dim = a.shape[1]
    k_aa = (a @ a.T / dim + 1.0) ** 3
    k_bb = (b @ b.T / dim + 1.0) ** 3
    k_ab = (a @ b.T / dim + 1.0) ** 3
    m, n = len(a), len(b)
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * k_ab.mean())
