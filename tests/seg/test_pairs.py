"""Pair discovery and the labelled subset (the pairs manifest: tests/manifests/test_pairs.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histoclr.errors import InputFileError
from histoclr.manifests.pairs import SegPair
from histoclr.seg.pairs import discover_pairs, select_labeled

XML = ('<Annotations MicronsPerPixel="0.5"><Annotation><Regions><Region Id="1"><Vertices>'
       '<Vertex X="2" Y="2"/><Vertex X="9" Y="2"/><Vertex X="9" Y="9"/></Vertices></Region>'
       "</Regions></Annotation></Annotations>")


def make_dataset(root: Path) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rgb = np.full((16, 20, 3), 200, np.uint8)
    for name in ("good_xml", "good_png", "no_mask", "mismatch", "empty", "empty_png"):
        Image.fromarray(rgb).save(images / f"{name}.png")
    (masks / "good_xml.xml").write_text(XML)
    lab = np.zeros((16, 20), np.uint8)
    lab[3:7, 3:7] = 1
    Image.fromarray(lab).save(masks / "good_png.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "mismatch.png")
    (masks / "empty.xml").write_text('<Annotations MicronsPerPixel="0.5"><Annotation/></Annotations>')
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(masks / "empty_png.png")
    (masks / "orphan.xml").write_text(XML)
    (masks / "notes.txt").write_text("ignored")
    return images, masks


def test_discover_pairs_reports_each_problem(tmp_path):
    images, masks = make_dataset(tmp_path)
    report = discover_pairs(images, masks, coverage=True)
    assert [p.image_id for p in report.pairs] == ["good_png", "good_xml"]
    xml_pair = report.pairs[1]
    assert xml_pair.mask_format == "aperio_xml" and xml_pair.mpp == 0.5 and xml_pair.split == ""
    assert report.pairs[0].mask_format == "label_image" and report.pairs[0].mpp is None
    assert report.info["good_png"].nuclei == 1
    assert report.info["good_png"].coverage == pytest.approx(16 / 320)
    problems = "\n".join(report.problems)
    assert len(report.problems) == 5, problems
    assert f"image without mask: {images / 'no_mask.png'}" in problems
    assert f"mask without image: {masks / 'orphan.xml'}" in problems
    assert f"size mismatch: mask {masks / 'mismatch.png'} is 10x10 but image" in problems
    assert f"{masks / 'empty.xml'}: empty annotation" in problems
    assert f"empty annotation: {masks / 'empty_png.png'} has no foreground" in problems
    with pytest.raises(InputFileError, match="masks folder not found"):
        discover_pairs(images, tmp_path / "nope")


def fake_pairs(n: int, val: int = 3) -> list[SegPair]:
    return [SegPair(f"img{i:02d}", Path(f"{i}.tif"), Path(f"{i}.xml"), "aperio_xml",
                    "val" if i < val else "train", 0.25) for i in range(n)]


def test_select_labeled_deterministic_nested_training_only():
    pairs = fake_pairs(13)
    a = select_labeled(pairs, label_fraction=0.25, seed=3)
    assert [p.image_id for p in a] == [p.image_id for p in select_labeled(pairs[::-1],
                                                                          label_fraction=0.25, seed=3)]
    assert len(a) == 3 and all(p.split == "train" for p in a)  # round(0.25 * 10) = 3 (half up)
    for seed in range(5):
        sizes = [{p.image_id for p in select_labeled(pairs, label_fraction=f, seed=seed)}
                 for f in (0.1, 0.25, 0.5, 1.0)]
        assert [len(s) for s in sizes] == [1, 3, 5, 10]
        assert sizes[0] <= sizes[1] <= sizes[2] <= sizes[3]
    picks = {tuple(p.image_id for p in select_labeled(pairs, num_labeled=2, seed=s))
             for s in range(10)}
    assert len(picks) > 3  # different seeds give different subsets
    ids = [f"id{i}" for i in range(8)]
    assert select_labeled(ids, num_labeled=3, seed=1) == sorted(select_labeled(ids, num_labeled=3,
                                                                                seed=1))
    assert len(select_labeled(ids, label_fraction=0.01)) == 1  # at least one image


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one"),
    ({"num_labeled": 2, "label_fraction": 0.5}, "exactly one"),
    ({"num_labeled": 0}, r"in \[1, 10\]"),
    ({"num_labeled": 11}, r"in \[1, 10\]"),
    ({"num_labeled": 2.5}, "integer"),
    ({"label_fraction": 0.0}, r"\(0, 1\]"),
    ({"label_fraction": 1.5}, r"\(0, 1\]"),
])
def test_select_labeled_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_labeled(fake_pairs(13), **kwargs)
    with pytest.raises(ValueError, match="no training images"):
        select_labeled(fake_pairs(3), num_labeled=1)
