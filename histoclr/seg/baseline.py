"""The classical nucleus segmentation references: haematoxylin channel + Otsu threshold, its nuclei
as connected components or split by the distance-transform watershed of :mod:`histoclr.seg.postprocess`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import binary_fill_holes
from skimage.color import rgb2hed
from skimage.filters import gaussian, threshold_otsu

from histoclr.manifests.pairs import SegPair
from histoclr.seg.dataset import load_pair
from histoclr.seg.metrics import aggregated_jaccard_index, instance_metrics
from histoclr.seg.postprocess import choose_params, default_params, instances_from_output, remove_small


def hed_otsu_segment(image: np.ndarray, min_size: int = 30, sigma: float = 1.0) -> np.ndarray:
    """Binary nucleus mask ``(H, W)`` bool of an H&E RGB image ``(H, W, 3)`` uint8.

    Colour deconvolution (``skimage.color.rgb2hed``) gives the haematoxylin channel, which is
    smoothed (Gaussian, ``sigma`` px; 0 = none) and thresholded with Otsu; objects smaller than
    ``min_size`` px are removed and holes are filled. ``min_size`` is in pixels at the image's
    own resolution (30 px ~ 1.9 um^2 at 0.25 um/px).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if min_size < 0 or sigma < 0:
        raise ValueError(f"min_size and sigma must be >= 0, got {min_size}, {sigma}")
    h = rgb2hed(image)[:, :, 0]
    if sigma > 0:
        h = gaussian(h, sigma=sigma)
    if np.ptp(h) == 0:
        return np.zeros(h.shape, dtype=bool)
    mask = h > threshold_otsu(h)
    mask = binary_fill_holes(mask)
    mask = remove_small(mask, min_size)
    return mask.astype(bool)


def classical_references(train_pairs: Sequence[SegPair], val_pairs: Sequence[SegPair], mpp: float | None,
                         min_size: int = 30) -> dict:
    """Haematoxylin-Otsu scored on the validation images as instances, two ways, at ``mpp``:

    * ``otsu``: its connected components (hole-filled, ``min_size`` px at native resolution);
    * ``otsu_watershed``: split by the distance-transform watershed, whose parameters are chosen by
      the same grid search as a model's (mean AJI on the *training* images; never the validation ones).

    Returns ``{"otsu": mean metrics, "otsu_watershed": mean metrics, "watershed_params": dict,
    "per_image": {"otsu": [...], "otsu_watershed": [...]}}`` (metrics of
    :func:`~histoclr.seg.metrics.instance_metrics`).
    """
    def masks(pairs):
        loaded = [load_pair(p, mpp) for p in pairs]
        return loaded, [hed_otsu_segment(lp.image, min_size=max(1, round(min_size * lp.scale ** 2)))
                        for lp in loaded]

    train, train_masks = masks(train_pairs)
    val, val_masks = masks(val_pairs)
    size = max(1, round(min_size * (val[0].scale if val else 1.0) ** 2))
    components = default_params("binary", method="components", min_size=size)
    base = default_params("binary", min_size=size)
    as_probs = [(m[None].astype(np.float32), None) for m in train_masks]
    ws, _ = choose_params(as_probs, [lp.instances for lp in train], base, aggregated_jaccard_index)
    per_image = {name: [instance_metrics(instances_from_output(m[None].astype(np.float32), params), lp.instances, lp.mask)
                        for lp, m in zip(val, val_masks)]
                 for name, params in (("otsu", components), ("otsu_watershed", ws))}
    mean = {name: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} for name, rows in per_image.items()}
    return {**mean, "watershed_params": ws.to_dict(), "per_image": per_image}
