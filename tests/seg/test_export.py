"""Nucleus outlines that rasterise back to their pixels, measurements, GeoJSON / CSV files, id colours."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label

from histoclr.seg.annotations import rasterize_instances, read_geojson
from histoclr.seg.export import (
    COLUMNS,
    decode_ids,
    encode_ids,
    nucleus_outlines,
    outline,
    region_measurements,
    write_nuclei,
)


def _blob(rng) -> np.ndarray:
    lab = label(ndimage.binary_fill_holes(rng.random((14, 16)) < 0.6), connectivity=1)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_outlines_rasterise_back_to_the_same_pixels_at_integer_scales(scale):
    rng = np.random.default_rng(scale)
    for _ in range(60):
        m = _blob(rng)
        xy = (outline(m) + 0.5) * scale - 0.5             # pixel-index coordinates at the finer scale
        back = rasterize_instances([xy], (m.shape[0] * scale, m.shape[1] * scale)) > 0
        assert np.array_equal(back, np.kron(m, np.ones((scale, scale), bool)))


def test_outline_vertices_are_pixel_corners_without_collinear_points():
    m = np.zeros((6, 7), bool)
    m[1:4, 2:6] = True
    assert sorted(map(tuple, outline(m))) == sorted([(1.5, 0.5), (5.5, 0.5), (5.5, 3.5), (1.5, 3.5)])


def test_measurements_outlines_and_files(tmp_path):
    labels = np.zeros((40, 50), np.int32)
    yy, xx = np.mgrid[:40, :50]
    labels[(yy - 12) ** 2 + (xx - 15) ** 2 <= 36] = 1
    labels[10:20, 30:45] = 2
    rgb = np.full((40, 50, 3), 230, np.uint8)
    rgb[labels == 1] = (60, 30, 90)                       # haematoxylin-dark
    t = region_measurements(labels, rgb)
    assert list(t["label"]) == [1, 2] and t["area"][1] == 150 and t["solidity"][1] == 1.0
    assert t["intensity_mean"][0] > t["intensity_mean"][1]
    outlines = nucleus_outlines(labels, t)
    cols = {"id": np.array([1, 2]), "centroid_x_px": t["centroid-1"], "centroid_y_px": t["centroid-0"],
            **{c: np.full(2, np.nan) for c in COLUMNS[3:5]}, "area_um2": t["area"] * 0.25,
            "perimeter_um": t["perimeter"] * 0.5, "eccentricity": t["eccentricity"], "solidity": t["solidity"],
            "hematoxylin_od_mean": t["intensity_mean"]}
    n = write_nuclei(tmp_path / "s.geojson", tmp_path / "s_nuclei.csv", "s", [(cols, outlines)])
    assert n == 2
    assert np.array_equal(rasterize_instances(read_geojson(tmp_path / "s.geojson"), labels.shape), labels)
    with open(tmp_path / "s.geojson", encoding="utf-8") as f:
        fc = json.load(f)
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 2
    props = fc["features"][1]["properties"]
    assert props["objectType"] == "detection" and props["measurements"]["Area µm^2"] == 37.5
    assert fc["features"][0]["id"] != fc["features"][1]["id"]
    with open(tmp_path / "s_nuclei.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS) and rows[1]["area_um2"] == "37.5" and rows[0]["centroid_x_um"] == ""


def test_ids_survive_the_rgb_encoding():
    ids = np.array([[0, 1, 255], [256, 65535, 70000], [2**24 - 1, 123456, 7]])
    rgb = encode_ids(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 3, 3) and np.array_equal(decode_ids(rgb), ids)
    assert tuple(encode_ids(np.array([[0x010203]]))[0, 0]) == (1, 2, 3)   # the documented R*65536 + G*256 + B
