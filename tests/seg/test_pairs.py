"""Pair discovery, the pairs manifest and the labelled subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histoclr.errors import InputFileError
from histoclr.manifests.pairs import SegPair, read_pairs_manifest, write_pairs_manifest
from histoclr.seg.pairs import discover_pairs, select_labeled

REPO = Path(__file__).resolve().parents[2]
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


def test_manifest_round_trip_and_errors(tmp_path):
    images, masks = make_dataset(tmp_path / "data")
    pairs = discover_pairs(images, masks).pairs
    pairs[0].split = "val"
    csv = tmp_path / "m" / "pairs.csv"
    write_pairs_manifest(pairs, csv, tmp_path / "data")
    text = csv.read_text()
    assert text.splitlines()[:2] == ["# histoclr-seg-pairs v1",
                                      "image_id,image,mask,mask_format,split,mpp"]
    assert "images/good_xml.png,masks/good_xml.xml,aperio_xml,,0.5" in text
    back = read_pairs_manifest(csv, tmp_path / "data")
    assert [(p.image_id, p.split, p.mpp) for p in back] == [("good_png", "val", None),
                                                           ("good_xml", "", 0.5)]
    assert back[1].image_path == tmp_path / "data/images/good_xml.png"

    with pytest.raises(InputFileError, match="not found under"):
        read_pairs_manifest(csv, tmp_path)  # wrong root
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,image,mask,mask_format,split,mpp\n")  # no version line
    with pytest.raises(InputFileError, match="first line should be '# histoclr-seg-pairs v1'"):
        read_pairs_manifest(bad, tmp_path)
    bad.write_text("# histoclr-seg-pairs v1\nimage_id,image,mask,split\n")
    with pytest.raises(InputFileError, match="missing column.*mask_format"):
        read_pairs_manifest(bad, tmp_path)
    bad.write_text(text.replace(",val,", ",holdout,"))
    with pytest.raises(InputFileError, match=r"line 3: split 'holdout'"):
        read_pairs_manifest(bad, tmp_path / "data")
    bad.write_text(text.replace(",0.5", ",-1"))
    with pytest.raises(InputFileError, match="mpp '-1' is not a positive number"):
        read_pairs_manifest(bad, tmp_path / "data")


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


@pytest.mark.shared_data
def test_committed_manifest_resolves_on_real_data(shared_data):
    pairs = read_pairs_manifest(REPO / "data_manifests/monuseg2018_seg_pairs.csv", shared_data)
    assert len(pairs) == 13
    val = sorted(p.image_id for p in pairs if p.split == "val")
    assert val == ["TCGA-21-5784-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1"]
    assert sum(p.split == "train" for p in pairs) == 10
    assert {p.mpp for p in pairs} == {0.2527} and {p.mask_format for p in pairs} == {"aperio_xml"}
    assert all(p.image_path.stem == p.mask_path.stem == p.image_id for p in pairs)
