"""Tissue detection on a low-resolution thumbnail (scikit-image), and tissue fraction per tile.

The mask is saturation above an Otsu threshold clamped to ``saturation_range`` (glass and white
background are unsaturated; a clamp keeps Otsu from splitting an all-tissue image into two
halves), minus large pen marks (saturated green/blue, green > red, which H&E never is) and large very
dark areas (black pen, debris), then cleaned up morphologically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TissueMask:
    """Boolean masks on the thumbnail's pixel grid, ``(h, w)``."""

    tissue: np.ndarray
    excluded: np.ndarray  # pen marks and dark debris removed from the tissue


def tissue_mask(rgb: np.ndarray, saturation_range: tuple[float, float] = (0.05, 0.10),
                pen_filter: bool = True, dark_value: float = 0.15, min_object_px: int = 16,
                max_hole_px: int = 16) -> TissueMask:
    """Tissue mask of an RGB uint8 thumbnail ``(h, w, 3)``.

    Args:
        saturation_range: bounds of the Otsu saturation threshold (HSV saturation, 0..1).
        pen_filter: remove saturated green/blue pen marks and very dark (black pen) pixels.
        dark_value: HSV value (0..1) below which a pixel counts as dark debris / black pen.
        min_object_px: tissue blobs of at most this many pixels are dropped; pen/dark blobs
            of at most this many pixels are ignored (nuclei are not pen marks).
        max_hole_px: holes of at most this many pixels inside tissue are filled.
    """
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import dilation, disk, remove_small_holes, remove_small_objects

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (h, w, 3) thumbnail, got {rgb.dtype} {rgb.shape}")
    lo, hi = saturation_range
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"saturation_range must satisfy 0 <= low <= high <= 1, got {saturation_range}")
    f = rgb.astype(np.float32) / 255
    vmax, vmin = f.max(axis=2), f.min(axis=2)
    hsv_sat = np.where(vmax > 0, (vmax - vmin) / np.maximum(vmax, 1e-6), 0).astype(np.float32)
    sat = gaussian(hsv_sat, sigma=1)
    flat = sat.min() == sat.max()
    t = hi if flat else float(np.clip(threshold_otsu(sat), lo, hi))
    tissue = sat > t
    excluded = np.zeros_like(tissue)
    if pen_filter:
        fs = gaussian(f, sigma=1, channel_axis=-1)
        r, g, b = fs[..., 0], fs[..., 1], fs[..., 2]
        coloured_pen = (hsv_sat > 0.25) & ((g > r + 0.05) | ((b > r + 0.35) & (r < 0.25)))
        dark = vmax < dark_value
        # pen strokes are large; nuclei and small dark specks at high resolution are not
        marks = remove_small_objects(coloured_pen | dark, max_size=min_object_px)
        excluded = dilation(marks, disk(2))
        tissue &= ~excluded
    tissue = remove_small_objects(tissue, max_size=min_object_px)
    tissue = remove_small_holes(tissue, max_size=max_hole_px)
    if pen_filter:
        tissue &= ~excluded  # do not fill pen strokes back in as holes
    return TissueMask(tissue=tissue, excluded=excluded & (sat > t))


def region_fractions(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Fraction of ``True`` pixels of ``mask`` ``(h, w)`` in each box ``(N, 4)`` = x0, y0, x1, y1.

    Box coordinates are in mask pixels (floats allowed); they are rounded to the pixel grid,
    clipped to the mask, and kept at least one pixel wide. Returns ``(N,)`` floats in 0..1.
    """
    h, w = mask.shape
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sat = np.zeros((h + 1, w + 1), np.int64)
    sat[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    x0 = np.clip(np.floor(boxes[:, 0] + 0.5), 0, w - 1).astype(np.int64)
    y0 = np.clip(np.floor(boxes[:, 1] + 0.5), 0, h - 1).astype(np.int64)
    x1 = np.clip(np.maximum(np.floor(boxes[:, 2] + 0.5), x0 + 1), 1, w).astype(np.int64)
    y1 = np.clip(np.maximum(np.floor(boxes[:, 3] + 0.5), y0 + 1), 1, h).astype(np.int64)
    inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    return inside / ((x1 - x0) * (y1 - y0))
