"""The segmentation pairs manifest: round trip, value checks, the committed manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from histoclr.manifests.csvfile import ManifestError
from histoclr.manifests.pairs import (
    SegPair,
    format_pairs_manifest,
    read_pairs_manifest,
    write_pairs_manifest,
)

REPO = Path(__file__).resolve().parents[2]


def make_pairs(root: Path) -> list[SegPair]:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    pairs = []
    for stem, fmt, suffix, split, mpp in (("a", "label_image", ".png", "val", None),
                                          ("b", "aperio_xml", ".xml", "", 0.5)):
        (root / "images" / f"{stem}.png").write_bytes(b"x")
        (root / "masks" / f"{stem}{suffix}").write_bytes(b"x")
        pairs.append(SegPair(stem, root / "images" / f"{stem}.png", root / "masks" / f"{stem}{suffix}",
                             fmt, split, mpp))
    return pairs


def test_round_trip_and_errors(tmp_path):
    root = tmp_path / "data"
    pairs = make_pairs(root)
    csv = tmp_path / "m" / "pairs.csv"
    write_pairs_manifest(pairs, csv, root)
    text = csv.read_text()
    assert text.splitlines() == ["# histoclr-seg-pairs v1", "image_id,image,mask,mask_format,split,mpp",
                                 "a,images/a.png,masks/a.png,label_image,val,",
                                 "b,images/b.png,masks/b.xml,aperio_xml,,0.5"]
    back = read_pairs_manifest(csv, root)
    assert back == pairs

    with pytest.raises(ManifestError, match="4 listed file.s. not found under"):
        read_pairs_manifest(csv, tmp_path)  # wrong root
    assert len(read_pairs_manifest(csv, tmp_path, check_files=False)) == 2
    bad = tmp_path / "bad.csv"
    for edit, message in [
        (lambda t: t.split("\n", 1)[1], "first line should be '# histoclr-seg-pairs v1'"),  # no version line
        (lambda t: t.replace(",mask_format,", ",format,"), "missing column(s): mask_format"),
        (lambda t: t.replace(",val,", ",holdout,"), "line 3: split 'holdout' is not train, val, test or empty"),
        (lambda t: t.replace(",0.5", ",-1"), "line 4: mpp '-1' is not a positive number"),
        (lambda t: t.replace("b,images", "a,images"), "line 4: duplicate image_id 'a'"),
        (lambda t: t.replace("aperio_xml", "svg"), "line 4: mask_format 'svg' is not one of"),
    ]:
        bad.write_text(edit(text))
        with pytest.raises(ManifestError) as e:
            read_pairs_manifest(bad, root)
        assert message in str(e.value) and str(e.value).startswith(f"{bad}: ")
    with pytest.raises(ValueError, match="unknown split"):
        format_pairs_manifest([SegPair("x", root / "x.png", root / "x.xml", "aperio_xml", "dev")], root)


@pytest.mark.shared_data
def test_committed_manifest_resolves_on_real_data(shared_data):
    pairs = read_pairs_manifest(REPO / "data_manifests/monuseg2018_seg_pairs.csv", shared_data)
    assert len(pairs) == 13
    val = sorted(p.image_id for p in pairs if p.split == "val")
    assert val == ["TCGA-21-5784-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1"]
    assert sum(p.split == "train" for p in pairs) == 10
    assert {p.mpp for p in pairs} == {0.2527} and {p.mask_format for p in pairs} == {"aperio_xml"}
    assert all(p.image_path.stem == p.mask_path.stem == p.image_id for p in pairs)
