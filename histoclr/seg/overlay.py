"""Overlay PNGs of nucleus predictions on the H&E image (with the ground truth when known)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries

from histoclr.io import atomic_path

TP, FP, FN = (40, 200, 60), (230, 40, 40), (40, 110, 255)   # green, red, blue
PRED_EDGE, GT_EDGE = (255, 255, 0), (0, 255, 255)          # yellow, cyan


def _blend(rgb: np.ndarray, where: np.ndarray, colour, alpha: float) -> None:
    rgb[where] = ((1 - alpha) * rgb[where] + alpha * np.asarray(colour, np.float32)).astype(np.uint8)


def overlay_image(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None,
                  alpha: float = 0.35) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``: prediction outlines in yellow; with ``gt`` the pixels are tinted
    green (true positive), red (false positive) and blue (missed) and GT outlines drawn in cyan.

    ``pred`` / ``gt``: binary masks or instance label maps ``(H, W)``; with instance maps every
    nucleus gets its own outline, so touching nuclei show the line between them.
    """
    pred_labels = np.asarray(pred)
    gt_labels = None if gt is None else np.asarray(gt)
    pred = pred_labels != 0
    if image.shape[:2] != pred.shape:
        raise ValueError(f"image {image.shape[:2]} and prediction {pred.shape} differ in size")
    out = np.array(image[:, :, :3], dtype=np.uint8, copy=True)
    if gt is None:
        _blend(out, pred, TP, alpha)
    else:
        gt = gt_labels != 0
        _blend(out, pred & gt, TP, alpha)
        _blend(out, pred & ~gt, FP, alpha)
        _blend(out, ~pred & gt, FN, alpha)
        out[find_boundaries(gt_labels, mode="inner") & gt] = GT_EDGE
    out[find_boundaries(pred_labels, mode="inner") & pred] = PRED_EDGE
    return out


def save_overlay_png(path: str | Path, image: np.ndarray, pred: np.ndarray,
                     gt: np.ndarray | None = None) -> Path:
    """Write :func:`overlay_image` as a PNG (atomically)."""
    with atomic_path(path) as tmp:
        Image.fromarray(overlay_image(image, pred, gt)).save(tmp, format="PNG")
    return Path(path)


def save_outline_png(path: str | Path, image: np.ndarray, instances: np.ndarray,
                     colour=(0, 255, 255)) -> Path:
    """Write a PNG of ``image`` (H, W, 3) uint8 with each instance's outline drawn (atomically)."""
    if image.shape[:2] != instances.shape:
        raise ValueError(f"image {image.shape[:2]} and instances {instances.shape} differ in size")
    out = np.array(image[:, :, :3], dtype=np.uint8, copy=True)
    out[find_boundaries(instances, mode="inner")] = colour
    with atomic_path(path) as tmp:
        Image.fromarray(out).save(tmp, format="PNG")
    return Path(path)
