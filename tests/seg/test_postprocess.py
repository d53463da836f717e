"""Instance post-processing: touching nuclei split, convex nuclei kept whole, parameters chosen by search."""

from __future__ import annotations

import numpy as np
import pytest

from histoclr.seg.metrics import aggregated_jaccard_index
from histoclr.seg.postprocess import (
    PostprocessParams,
    choose_params,
    default_params,
    instances_from_output,
    split_binary,
)
from histoclr.seg.targets import contour_classes, normalized_distance


def discs(centres, r=10, shape=(64, 80)) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    inst = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, start=1):
        inst[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (inst == 0)] = k
    return inst


def soft(onehot: np.ndarray, rng, noise: float = 0.15) -> np.ndarray:
    """Class 'probabilities' (C, H, W) from a one-hot map plus noise, renormalised."""
    p = onehot.astype(np.float32) + rng.uniform(0, noise, onehot.shape).astype(np.float32)
    return p / p.sum(axis=0, keepdims=True)


TOUCHING = discs([(32, 28), (32, 46)])       # centres 18 px apart, radius 10: they overlap/touch
SINGLE = discs([(32, 40)], r=14)


def test_contour_output_splits_two_touching_discs_and_keeps_one_whole():
    rng = np.random.default_rng(0)
    for inst, n in ((TOUCHING, 2), (SINGLE, 1)):
        c = contour_classes(inst, 2)
        probs = soft(np.stack([c == k for k in range(3)]), rng)
        out = instances_from_output(probs, default_params("contour"))
        assert out.max() == n
        assert aggregated_jaccard_index(inst, out) > 0.8


def test_distance_output_splits_two_touching_discs_and_keeps_one_whole():
    rng = np.random.default_rng(1)
    for inst, n in ((TOUCHING, 2), (SINGLE, 1)):
        probs = soft(np.stack([inst == 0, inst > 0]), rng)
        d = normalized_distance(inst) + rng.uniform(0, 0.05, inst.shape).astype(np.float32)
        out = instances_from_output(probs, default_params("distance", marker_threshold=0.5), d)
        assert out.max() == n
        assert aggregated_jaccard_index(inst, out) > 0.8


def test_binary_watershed_splits_touching_discs_but_not_a_convex_one():
    assert split_binary(TOUCHING > 0).max() == 2
    assert split_binary(SINGLE > 0).max() == 1
    ellipse = np.zeros((60, 90), bool)
    yy, xx = np.mgrid[:60, :90]
    ellipse[((yy - 30) / 12.0) ** 2 + ((xx - 45) / 25.0) ** 2 <= 1] = True   # elongated but convex
    assert split_binary(ellipse, h=2.0, sigma=1.0).max() == 1
    components = instances_from_output((TOUCHING > 0)[None].astype(np.float32), default_params("binary", method="components"))
    assert components.max() == 1        # connected components leave them merged


def test_small_objects_removed_holes_filled_and_unmarked_foreground_kept():
    fg = discs([(20, 20), (20, 60)], r=8)
    fg[2, 2] = 3                          # a 1-px speck
    fg[20, 20] = 0                        # a hole inside the first disc
    out = instances_from_output((fg > 0)[None].astype(np.float32), default_params("binary", method="components"))
    assert out.max() == 2 and out[20, 20] > 0 and out[2, 2] == 0
    # a nucleus whose interior never passes the marker threshold is still kept as one nucleus
    c = contour_classes(discs([(32, 40)], r=6), 2)
    probs = np.stack([c == 0, np.zeros_like(c, bool), c > 0]).astype(np.float32)   # all boundary, no interior
    assert instances_from_output(probs, default_params("contour")).max() == 1


def test_choose_params_picks_the_best_on_the_given_images():
    rng = np.random.default_rng(2)
    c = contour_classes(TOUCHING, 2)
    probs = soft(np.stack([c == 0, c == 1, c == 2]), rng)
    base = default_params("contour", min_size=5000)              # removes everything: AJI 0
    best, table = choose_params([(probs, None)], [TOUCHING], base, aggregated_jaccard_index,
                                candidates=[{"min_size": 16}, {"min_size": 2000}])
    assert best.min_size == 16 and len(table) == 3
    assert table[0]["score"] == 0.0 and table[1]["score"] > 0.8
    with pytest.raises(ValueError, match="one truth per output"):
        choose_params([(probs, None)], [], base, aggregated_jaccard_index)


def test_params_round_trip_and_validation():
    p = default_params("distance", marker_threshold=0.45)
    assert PostprocessParams.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="unknown post-processing parameter"):
        PostprocessParams.from_dict({**p.to_dict(), "radius": 3})
    with pytest.raises(ValueError, match="method"):
        PostprocessParams(method="stardist").validate()
    with pytest.raises(ValueError, match="3 classes"):
        instances_from_output(np.zeros((2, 8, 8), np.float32), default_params("contour"))


def test_remove_small_drops_objects_under_the_size_in_masks_and_label_images():
    import warnings

    from histoclr.seg.postprocess import remove_small

    labels = np.zeros((10, 10), np.int32)
    labels[0:2, 0:2] = 1          # 4 px
    labels[5:8, 5:8] = 2          # 9 px
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # a one-nucleus label image warns nothing
        assert set(np.unique(remove_small(labels, 5))) == {0, 2}
        assert not remove_small(np.where(labels == 1, 7, 0), 5).any()      # one nucleus, too small
        assert set(np.unique(remove_small(labels == 2, 9))) == {False, True}
        assert not remove_small(labels > 0, 10).any()
    assert remove_small(labels, 1) is labels
