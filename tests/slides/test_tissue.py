"""Tissue mask on a thumbnail and tissue fraction per tile box."""

from __future__ import annotations

import numpy as np
import pytest

from histoclr.slides.synthetic import render_region
from histoclr.slides.tissue import region_fractions, tissue_mask


def _scene() -> np.ndarray:
    """200x300 thumbnail: glass, a tissue block (x 20..140), a green and a blue pen stroke on
    glass, a black pen blob, and a few dark nucleus-sized specks inside the tissue."""
    img = render_region(0, 0, 300, 200, 1, tissue=[(20, 20, 140, 180)], seed=1)
    img[30:50, 170:290] = (40, 150, 60)     # green pen
    img[80:95, 170:290] = (30, 60, 170)     # blue pen
    img[130:170, 200:260] = (20, 20, 25)    # black pen
    for y, x in ((60, 60), (100, 90), (140, 50)):
        img[y:y + 3, x:x + 3] = (25, 15, 40)  # dark nuclei: tissue, not pen
    return img


def test_tissue_mask_keeps_tissue_drops_glass_and_pen():
    m = tissue_mask(_scene(), min_object_px=50, max_hole_px=50)
    assert m.tissue.shape == (200, 300)
    assert m.tissue[25:175, 25:135].mean() > 0.98          # tissue
    assert m.tissue[:, 150:].mean() < 0.01                  # glass and all pen strokes
    assert m.tissue[5:15, :].mean() == 0                    # glass above the tissue
    assert m.tissue[59:64, 59:64].all()                     # nuclei stay tissue
    assert m.excluded[30:50, 175:285].mean() > 0.9          # green pen recognised as excluded
    assert m.excluded[80:95, 175:285].mean() > 0.9          # blue pen


def test_without_pen_filter_pen_counts_as_tissue():
    m = tissue_mask(_scene(), pen_filter=False, min_object_px=50, max_hole_px=50)
    assert m.tissue[30:50, 175:285].mean() > 0.9
    assert not m.excluded.any()


def test_blank_and_all_tissue_images():
    blank = np.full((64, 64, 3), 245, np.uint8)
    assert not tissue_mask(blank).tissue.any()
    full = render_region(0, 0, 64, 64, 1, tissue=[(0, 0, 64, 64)])
    assert tissue_mask(full).tissue.mean() > 0.99   # Otsu does not split an all-tissue image
    with pytest.raises(ValueError):
        tissue_mask(blank[..., 0])


def test_region_fractions():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    f = region_fractions(mask, np.array([[0, 0, 5, 10], [5, 0, 10, 10], [3, 0, 7, 4], [9.6, 9.6, 9.9, 9.9]]))
    np.testing.assert_allclose(f, [1.0, 0.0, 0.5, 0.0])
    assert region_fractions(mask, np.zeros((0, 4))).shape == (0,)
