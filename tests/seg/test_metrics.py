"""Dice / IoU / pixel accuracy / AJI / PQ / detection F1 on hand-made arrays with hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from histoclr.seg.metrics import (
    aggregated_jaccard_index,
    detection_f1,
    dice,
    instance_metrics,
    iou,
    panoptic_quality,
    pixel_accuracy,
)
from histoclr.seg.postprocess import connected_components


def test_binary_metrics_by_hand():
    pred = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
    gt = np.array([[1, 0, 1, 0], [0, 0, 0, 0]])
    assert dice(pred, gt) == pytest.approx(2 * 1 / (2 + 2))
    assert iou(pred, gt) == pytest.approx(1 / 3)
    assert pixel_accuracy(pred, gt) == pytest.approx(6 / 8)
    empty = np.zeros((3, 3), bool)
    assert dice(empty, empty) == iou(empty, empty) == pixel_accuracy(empty, empty) == 1.0
    full = np.ones((3, 3), bool)
    assert dice(full, empty) == iou(full, empty) == pixel_accuracy(full, empty) == 0.0
    assert dice(gt * 5, gt) == 1.0  # any non-zero value is foreground
    with pytest.raises(ValueError, match="same shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


def aji_case() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((10, 10), np.int32)
    pr = np.zeros((10, 10), np.int32)
    gt[0:4, 0:4] = 1  # split into two predictions: p1 (12 px, best) and p2 (4 px, unused)
    pr[0:4, 0:3] = 1
    pr[0:4, 3:4] = 2
    gt[0:4, 6:8] = 2  # g2 and g3 merged into one prediction p3 (16 px), matched by both
    gt[0:4, 8:10] = 3
    pr[0:4, 6:10] = 3
    gt[8:10, 0:2] = 4  # missed: no prediction overlaps it
    pr[8:10, 8:10] = 4  # false positive: overlaps no GT
    gt[6:8, 4:8] = 5  # shifted by one column: intersection 6, union 10
    pr[6:8, 5:9] = 5
    return gt, pr


def test_aji_hand_computed():
    gt, pr = aji_case()
    # C = 12 (g1&p1) + 8 + 8 (g2, g3 & p3) + 6 (g5&p5) = 34
    # U = 16 (g1|p1) + 16 + 16 (g2|p3, g3|p3) + 10 (g5|p5) + 4 (g4 missed) + 4 (p2) + 4 (p4) = 70
    assert aggregated_jaccard_index(gt, pr) == pytest.approx(34 / 70)
    # label values do not matter, only the partition
    perm = np.array([0, 17, 3, 99, 5, 42])
    assert aggregated_jaccard_index(perm[gt], pr * 7) == pytest.approx(34 / 70)
    assert aggregated_jaccard_index(gt, gt) == 1.0
    assert aggregated_jaccard_index(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    assert aggregated_jaccard_index(gt, np.zeros_like(gt)) == 0.0
    assert aggregated_jaccard_index(np.zeros_like(gt), pr) == 0.0
    # the binary view of the same prediction cannot tell the split/merge: Dice is much higher
    assert dice(pr > 0, gt > 0) > 0.8 > 34 / 70
    with pytest.raises(ValueError, match="same shape"):
        aggregated_jaccard_index(gt, pr[:5])


def test_connected_components_and_instance_metrics_of_a_binary_prediction():
    b = np.zeros((12, 12), bool)
    b[0:4, 0:4] = True
    b[4:6, 4:6] = True  # touches the first one only diagonally -> separate (4-connectivity)
    b[10, 10] = True  # 1 px: removed by min_size
    inst = connected_components(b, min_size=2)
    assert inst.dtype == np.int32 and inst.max() == 2 and inst[10, 10] == 0
    assert connected_components(b, min_size=0).max() == 3

    gt, pr = aji_case()
    m = instance_metrics(connected_components(pr > 0, min_size=1), gt, gt > 0)
    assert set(m) == {"dice", "iou", "pixel_acc", "aji", "pq", "dq", "sq", "f1"}
    assert m["dice"] == pytest.approx(dice(pr, gt))
    assert m["pixel_acc"] == pytest.approx(pixel_accuracy(pr, gt))
    # from the binary prediction p1 and p2 merge back into one component: g1 is matched
    # exactly (16/16), and p3 stays merged: C = 16 + 8 + 8 + 6 = 38, U = 16 + 32 + 10 + 4 + 4 = 66
    assert m["aji"] == pytest.approx(38 / 66)


def test_panoptic_quality_hand_computed():
    gt, pr = aji_case()
    # IoU > 0.5 pairs: g1-p1 12/16 = 0.75 and g5-p5 6/10 = 0.6. The merged p3 has IoU 8/16 = 0.5 with
    # g2 and with g3: not > 0.5, so one prediction over two nuclei matches neither. p2 (split off g1)
    # is a FP. TP = 2, FP = 3 (p2, p3, p4), FN = 3 (g2, g3, g4).
    q = panoptic_quality(gt, pr)
    assert (q["tp"], q["fp"], q["fn"]) == (2, 3, 3)
    assert q["dq"] == pytest.approx(2 / (2 + 1.5 + 1.5))
    assert q["sq"] == pytest.approx((0.75 + 0.6) / 2)
    assert q["pq"] == pytest.approx(0.4 * 0.675)
    assert panoptic_quality(gt, gt)["pq"] == 1.0
    empty = np.zeros_like(gt)
    assert panoptic_quality(empty, empty)["pq"] == 1.0
    assert panoptic_quality(gt, empty) == {"pq": 0.0, "dq": 0.0, "sq": 0.0, "tp": 0, "fp": 0, "fn": 5}
    assert panoptic_quality(empty, pr)["fp"] == 5 and panoptic_quality(empty, pr)["pq"] == 0.0


def test_detection_f1_by_centroids():
    gt, pr = aji_case()
    # centroids (row, col): g1 (1.5, 1.5), g2 (1.5, 6.5), g3 (1.5, 8.5), g4 (8.5, 0.5), g5 (6.5, 5.5);
    # p1 (1.5, 1), p2 (1.5, 3), p3 (1.5, 7.5), p4 (8.5, 8.5), p5 (6.5, 6.5). Within 1.5 px, one to
    # one: g1-p1 (0.5), g5-p5 (1), p3 with g2 or g3 (1), p2 is 1.5 from g1 but g1 is taken -> TP = 3
    f = detection_f1(gt, pr, radius=1.5)
    assert f["precision"] == pytest.approx(3 / 5) and f["recall"] == pytest.approx(3 / 5)
    assert f["f1"] == pytest.approx(0.6)
    assert detection_f1(gt, pr, radius=0.1)["f1"] == 0.0
    empty = np.zeros_like(gt)
    assert detection_f1(empty, empty)["f1"] == 1.0 and detection_f1(gt, empty)["f1"] == 0.0
    assert detection_f1(empty, pr)["f1"] == 0.0


def test_instance_metrics_collects_every_score():
    gt, pr = aji_case()
    m = instance_metrics(pr, gt)
    assert m["aji"] == pytest.approx(34 / 70) and m["pq"] == pytest.approx(0.27)
    assert m["dice"] == pytest.approx(dice(pr, gt)) and 0 <= m["f1"] <= 1
