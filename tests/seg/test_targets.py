"""Training targets from small hand-made instance maps, against arrays worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from histoclr.seg.targets import contour_classes, make_target, normalized_distance, output_channels


def two_squares() -> np.ndarray:
    """A 4x4 nucleus (label 1) touching a 4x3 nucleus (label 2) along a vertical edge."""
    inst = np.zeros((6, 9), np.int32)
    inst[1:5, 1:5] = 1
    inst[1:5, 5:8] = 2
    return inst


def test_contour_classes_by_hand():
    c = contour_classes(two_squares(), boundary_width=1)
    expected = np.array([
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 2, 2, 2, 2, 2, 2, 2, 0],
        [0, 2, 1, 1, 2, 2, 1, 2, 0],
        [0, 2, 1, 1, 2, 2, 1, 2, 0],
        [0, 2, 2, 2, 2, 2, 2, 2, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0]], np.uint8)
    np.testing.assert_array_equal(c, expected)
    inst = two_squares()
    np.testing.assert_array_equal(c == 2, find_boundaries(inst, mode="inner", connectivity=1) & (inst > 0))
    # width 2 leaves no interior in these small nuclei
    assert set(np.unique(contour_classes(two_squares(), 2)[inst > 0])) == {2}


def test_normalized_distance_by_hand():
    inst = np.zeros((5, 7), np.int32)
    inst[0:5, 0:5] = 1            # 5x5 square: distances 1 (rim), 2, 3 (centre) -> / 3
    inst[2, 6] = 2                # a single pixel: distance 1 -> 1.0
    d = normalized_distance(inst)
    assert d.dtype == np.float32
    assert d[2, 2] == pytest.approx(1.0) and d[1, 2] == pytest.approx(2 / 3) and d[2, 1] == pytest.approx(2 / 3)
    assert d[0, 2] == pytest.approx(1 / 3) and d[2, 6] == pytest.approx(1.0)
    assert d[inst == 0].max() == 0 and d[inst > 0].max() == pytest.approx(1.0)
    # the nucleus cut by the image edge still has its border there (row 0 is its rim)
    assert d[0, 0] == pytest.approx(1 / 3)


def test_make_target_and_channels():
    inst = two_squares()
    assert make_target(inst, "binary")["classes"].tolist() == (inst > 0).astype(int).tolist()
    t = make_target(inst, "distance")
    assert set(t) == {"classes", "distance"} and t["classes"].dtype == np.int64
    assert make_target(inst, "contour", 1)["classes"].max() == 2
    assert (output_channels("binary"), output_channels("binary", 1), output_channels("contour"),
            output_channels("distance")) == (2, 1, 3, 3)
    with pytest.raises(ValueError, match="unknown target"):
        make_target(inst, "stardist")
    with pytest.raises(ValueError, match="integer"):
        make_target(inst.astype(np.float32), "binary")


def test_config_and_stage_name_the_same_targets_and_methods():
    from histoclr.config import seg as cfg_seg
    from histoclr.seg.postprocess import METHODS
    from histoclr.seg.targets import TARGETS

    assert cfg_seg.TARGETS == TARGETS and cfg_seg.POSTPROCESS_METHODS == METHODS
