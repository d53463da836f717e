"""Segmentation metrics on binary masks ``(H, W)`` and instance label maps ``(H, W)`` int.

Binary metrics treat any non-zero value as foreground; empty prediction vs empty truth is a
perfect score (1.0).
"""

from __future__ import annotations

import numpy as np


def _binary_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred) != 0, np.asarray(gt) != 0
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred and gt must be 2-D arrays of the same shape, got {pred.shape} "
                         f"and {gt.shape}")
    return pred, gt


def dice(pred, gt) -> float:
    """2|P & G| / (|P| + |G|); 1.0 when both are empty."""
    p, g = _binary_pair(pred, gt)
    denom = int(p.sum()) + int(g.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & g).sum()) / denom


def iou(pred, gt) -> float:
    """|P & G| / |P | G|; 1.0 when both are empty."""
    p, g = _binary_pair(pred, gt)
    union = int((p | g).sum())
    return 1.0 if union == 0 else int((p & g).sum()) / union


def pixel_accuracy(pred, gt) -> float:
    """Fraction of pixels where the binary prediction equals the truth."""
    p, g = _binary_pair(pred, gt)
    return float((p == g).mean())


def remove_small(ar: np.ndarray, min_size: int) -> np.ndarray:
    """``skimage.morphology.remove_small_objects`` keeping objects of >= ``min_size`` pixels.

    (scikit-image 0.26 renamed ``min_size`` (keep >= it) to ``max_size`` (drop <= it).)
    """
    import inspect

    from skimage.morphology import remove_small_objects

    if min_size <= 1:
        return ar
    if "max_size" in inspect.signature(remove_small_objects).parameters:
        return remove_small_objects(ar, max_size=min_size - 1)
    return remove_small_objects(ar, min_size=min_size)


def instances_from_binary(pred, min_size: int = 16) -> np.ndarray:
    """int32 instance labels from a binary mask: 4-connected components of at least ``min_size`` px.

    Touching nuclei stay merged (no watershed split).
    """
    from skimage.measure import label
    from skimage.segmentation import relabel_sequential

    fg = np.asarray(pred) != 0
    if fg.ndim != 2:
        raise ValueError(f"pred must be a 2-D array, got shape {fg.shape}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    labels = label(fg, connectivity=1)
    if min_size > 1:
        labels = relabel_sequential(remove_small(labels, min_size))[0]
    return labels.astype(np.int32)


def aggregated_jaccard_index(gt_instances, pred_instances) -> float:
    """Aggregated Jaccard Index (Kumar et al., IEEE TMI 2017).

    For every ground-truth instance G_i, take the predicted instance S_j with the largest IoU
    (among those that overlap it): C += |G_i & S_j|, U += |G_i | S_j|; a G_i that overlaps no
    prediction adds |G_i| to U. Finally every predicted instance never chosen adds its area
    to U. AJI = C / U. (A prediction chosen by two GT instances counts in both, as in the
    original definition.) Both empty -> 1.0; only one empty -> 0.0.
    """
    from skimage.segmentation import relabel_sequential

    gt = np.asarray(gt_instances)
    pr = np.asarray(pred_instances)
    if gt.shape != pr.shape or gt.ndim != 2:
        raise ValueError(f"instance maps must be 2-D and of the same shape, got {gt.shape} and "
                         f"{pr.shape}")
    if (gt < 0).any() or (pr < 0).any():
        raise ValueError("instance labels must be >= 0 (0 = background)")
    gt = relabel_sequential(gt.astype(np.int64))[0]
    pr = relabel_sequential(pr.astype(np.int64))[0]
    n_g, n_p = int(gt.max()), int(pr.max())
    if n_g == 0 and n_p == 0:
        return 1.0
    if n_g == 0 or n_p == 0:
        return 0.0
    # Contingency table of pixel counts: rows GT label 0..n_g, columns pred label 0..n_p.
    table = np.bincount((gt * (n_p + 1) + pr).ravel(), minlength=(n_g + 1) * (n_p + 1))
    table = table.reshape(n_g + 1, n_p + 1)
    area_g = table.sum(axis=1)[1:]  # (n_g,)
    area_p = table.sum(axis=0)[1:]  # (n_p,)
    inter = table[1:, 1:]  # (n_g, n_p)
    union = area_g[:, None] + area_p[None, :] - inter
    ious = inter / union
    best = ious.argmax(axis=1)  # (n_g,)
    rows = np.arange(n_g)
    matched = inter[rows, best] > 0
    c = int(inter[rows, best][matched].sum())
    u = int(union[rows, best][matched].sum()) + int(area_g[~matched].sum())
    used = np.zeros(n_p, dtype=bool)
    used[best[matched]] = True
    u += int(area_p[~used].sum())
    return c / u


def segmentation_metrics(pred_binary, gt_mask, gt_instances, *, min_size: int = 16) -> dict:
    """``{dice, iou, pixel_acc, aji}`` of a binary prediction; AJI uses its connected components."""
    pred = np.asarray(pred_binary) != 0
    return {
        "dice": dice(pred, gt_mask),
        "iou": iou(pred, gt_mask),
        "pixel_acc": pixel_accuracy(pred, gt_mask),
        "aji": aggregated_jaccard_index(gt_instances, instances_from_binary(pred, min_size)),
    }
