"""Segmentation metrics on binary masks ``(H, W)`` and instance label maps ``(H, W)`` int.

Pixel scores (Dice, IoU, accuracy) treat any non-zero value as foreground; instance scores are the
Aggregated Jaccard Index (AJI, MoNuSeg's ranking metric), panoptic quality (PQ = DQ x SQ, IoU > 0.5
matching) and centroid-matched detection F1. Empty prediction vs empty truth is a perfect score (1.0).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from skimage.segmentation import relabel_sequential


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


def _instance_pair(gt_instances, pred_instances) -> tuple[np.ndarray, np.ndarray]:
    """Both maps relabelled 0..n (int64), checked to be 2-D, of one shape, and >= 0."""
    gt = np.asarray(gt_instances)
    pr = np.asarray(pred_instances)
    if gt.shape != pr.shape or gt.ndim != 2:
        raise ValueError(f"instance maps must be 2-D and of the same shape, got {gt.shape} and "
                         f"{pr.shape}")
    if (gt < 0).any() or (pr < 0).any():
        raise ValueError("instance labels must be >= 0 (0 = background)")
    return relabel_sequential(gt.astype(np.int64))[0], relabel_sequential(pr.astype(np.int64))[0]


def _overlaps(gt: np.ndarray, pr: np.ndarray):
    """``(inter (n_g, n_p), area_g (n_g,), area_p (n_p,))`` pixel counts of sequential label maps."""
    n_g, n_p = int(gt.max()), int(pr.max())
    table = np.bincount((gt * (n_p + 1) + pr).ravel(), minlength=(n_g + 1) * (n_p + 1))
    table = table.reshape(n_g + 1, n_p + 1)
    return table[1:, 1:], table.sum(axis=1)[1:], table.sum(axis=0)[1:]


def aggregated_jaccard_index(gt_instances, pred_instances) -> float:
    """Aggregated Jaccard Index (Kumar et al., IEEE TMI 2017).

    For every ground-truth instance G_i, take the predicted instance S_j with the largest IoU
    (among those that overlap it): C += |G_i & S_j|, U += |G_i | S_j|; a G_i that overlaps no
    prediction adds |G_i| to U. Finally every predicted instance never chosen adds its area
    to U. AJI = C / U. (A prediction chosen by two GT instances counts in both, as in the
    original definition.) Both empty -> 1.0; only one empty -> 0.0.
    """
    gt, pr = _instance_pair(gt_instances, pred_instances)
    n_g, n_p = int(gt.max()), int(pr.max())
    if n_g == 0 and n_p == 0:
        return 1.0
    if n_g == 0 or n_p == 0:
        return 0.0
    inter, area_g, area_p = _overlaps(gt, pr)
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


def panoptic_quality(gt_instances, pred_instances, iou_threshold: float = 0.5) -> dict[str, float]:
    """Panoptic quality (Kirillov et al., CVPR 2019) of one class, as HoVer-Net evaluates nuclei.

    Pairs with IoU > ``iou_threshold`` (0.5 makes the matching unique) are true positives;
    unmatched truths are FN, unmatched predictions FP. ``dq = TP / (TP + FP/2 + FN/2)`` (detection
    quality, an F1), ``sq`` = mean IoU of the TP pairs (segmentation quality), ``pq = dq * sq``.
    Returns ``{pq, dq, sq, tp, fp, fn}``; both empty -> pq = dq = sq = 1; no TP -> sq = 0.
    """
    if not 0 <= iou_threshold < 1:
        raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    gt, pr = _instance_pair(gt_instances, pred_instances)
    n_g, n_p = int(gt.max()), int(pr.max())
    if n_g == 0 and n_p == 0:
        return {"pq": 1.0, "dq": 1.0, "sq": 1.0, "tp": 0, "fp": 0, "fn": 0}
    inter, area_g, area_p = _overlaps(gt, pr)
    ious = inter / (area_g[:, None] + area_p[None, :] - inter)
    if iou_threshold < 0.5:  # matching is no longer unique: one-to-one by best IoU
        rows, cols = linear_sum_assignment(-ious)
        keep = ious[rows, cols] > iou_threshold
        matched = ious[rows[keep], cols[keep]]
    else:
        matched = ious[ious > iou_threshold]
    tp = int(matched.size)
    fp, fn = n_p - tp, n_g - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(matched.mean()) if tp else 0.0
    return {"pq": dq * sq, "dq": dq, "sq": sq, "tp": tp, "fp": fp, "fn": fn}


def detection_f1(gt_instances, pred_instances, radius: float = 12.0) -> dict[str, float]:
    """Object-level detection: predicted and true nuclei paired one-to-one by centroid distance
    (Hungarian matching, pairs farther than ``radius`` px rejected, as in HoVer-Net's detection
    scores; 12 px = 3 um at 0.25 um/px). Returns ``{f1, precision, recall}``; both empty -> 1."""
    gt, pr = _instance_pair(gt_instances, pred_instances)
    n_g, n_p = int(gt.max()), int(pr.max())
    if n_g == 0 and n_p == 0:
        return {"f1": 1.0, "precision": 1.0, "recall": 1.0}
    if n_g == 0 or n_p == 0:
        return {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    cg = np.array(ndimage.center_of_mass(np.ones_like(gt), gt, np.arange(1, n_g + 1)))
    cp = np.array(ndimage.center_of_mass(np.ones_like(pr), pr, np.arange(1, n_p + 1)))
    dist = cdist(cg, cp)
    far = dist > radius
    rows, cols = linear_sum_assignment(np.where(far, 1e9, dist))   # most pairs within radius, then nearest
    tp = int((~far[rows, cols]).sum())
    precision, recall = tp / n_p, tp / n_g
    f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
    return {"f1": f1, "precision": precision, "recall": recall}


def instance_metrics(pred_instances, gt_instances, gt_mask=None) -> dict[str, float]:
    """``{dice, iou, pixel_acc, aji, pq, dq, sq, f1}`` of a predicted instance map ``(H, W)``.

    Pixel scores compare the predicted foreground (``pred_instances > 0``) with ``gt_mask``
    (default: ``gt_instances > 0``).
    """
    pred_fg = np.asarray(pred_instances) != 0
    gt_fg = np.asarray(gt_instances) != 0 if gt_mask is None else gt_mask
    pq = panoptic_quality(gt_instances, pred_instances)
    return {"dice": dice(pred_fg, gt_fg), "iou": iou(pred_fg, gt_fg), "pixel_acc": pixel_accuracy(pred_fg, gt_fg),
            "aji": aggregated_jaccard_index(gt_instances, pred_instances),
            "pq": pq["pq"], "dq": pq["dq"], "sq": pq["sq"],
            "f1": detection_f1(gt_instances, pred_instances)["f1"]}
