"""The built-in demo data root: deterministic bytes, annotations read by the real readers, verifiable."""

from __future__ import annotations

import numpy as np
import pytest

from histoclr.dataroot import list_files, verify_root
from histoclr.demo import N_IMAGES, TILE, is_demo_root, write_demo_root
from histoclr.errors import HistoclrError
from histoclr.images import read_rgb
from histoclr.io import sha256_file
from histoclr.manifests.data import read_data_manifest
from histoclr.manifests.pairs import read_pairs_manifest
from histoclr.seg.annotations import load_instances, read_aperio_xml
from histoclr.slides.reader import open_wsi


def _digests(root):
    return {p: sha256_file(root / p) for p in list_files(root)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo_root(tmp_path_factory.mktemp("demo") / "root", seed=0)


def test_same_seed_same_bytes_other_seed_other_bytes(demo, tmp_path):
    again = write_demo_root(tmp_path / "again", seed=0)
    other = write_demo_root(tmp_path / "other", seed=1)
    first = _digests(demo.root)
    assert len(first) == 1 + 1 + 4 * N_IMAGES + 2        # README, slide, 4 files per image, 2 manifests
    assert _digests(again.root) == first
    changed = {p for p, d in _digests(other.root).items() if first.get(p) != d}
    assert "slides/demo-slide.tif" in changed and "labeled/images/demo-00.tif" in changed


def test_annotations_load_through_the_readers_in_every_format(demo):
    pairs = read_pairs_manifest(demo.pairs, demo.root)
    assert len(pairs) == N_IMAGES
    assert {p.mask_format for p in pairs} == {"aperio_xml", "geojson", "label_image"}
    assert sorted(p.split for p in pairs).count("val") == 2
    lab = demo.root / "labeled"
    touching = 0
    for p in pairs:
        img = read_rgb(p.image_path)
        assert img.shape == (TILE, TILE, 3)
        got = load_instances(p.mask_path, p.mask_format, img.shape[:2])
        # the same nuclei in all three formats
        for fmt, f in (("aperio_xml", lab / "annotations" / f"{p.image_id}.xml"),
                       ("geojson", lab / "geojson" / f"{p.image_id}.geojson"),
                       ("label_image", lab / "masks" / f"{p.image_id}.png")):
            np.testing.assert_array_equal(load_instances(f, fmt, img.shape[:2]), got)
        assert len(np.unique(got)) - 1 >= 15
        # nuclei are dark on pink tissue
        assert img[got > 0].mean() < img[got == 0].mean() - 40
        # touching nuclei: horizontally adjacent pixels of two different instances
        a, b = got[:, :-1], got[:, 1:]
        touching += int(((a > 0) & (b > 0) & (a != b)).any())
    assert touching >= N_IMAGES // 2
    assert read_aperio_xml(lab / "annotations" / "demo-00.xml").mpp == 0.25


def test_slide_manifest_and_rerun(demo):
    with open_wsi(demo.slide) as s:
        assert s.mpp == pytest.approx(0.25)
        assert s.dimensions == (2048, 1536) and s.level_count == 3
    rows = read_data_manifest(demo.manifest)
    assert verify_root(demo.root, rows, progress=False).passed
    roles = {r["path"]: r["role"] for r in rows}
    assert "slides/demo-slide.tif" in roles          # a generic pyramidal TIFF: role "other" in dataroot
    assert sum(r == "labeled_image" for r in roles.values()) == N_IMAGES
    assert all("synthetic" in r["source"] for r in rows)
    before = (demo.manifest.stat().st_mtime_ns, _digests(demo.root))
    write_demo_root(demo.root, seed=0)                     # complete and unchanged: kept
    assert (demo.manifest.stat().st_mtime_ns, _digests(demo.root)) == before
    assert is_demo_root(demo.root)


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "slide.svs").write_bytes(b"x")
    with pytest.raises(HistoclrError, match="not a demo data root"):
        write_demo_root(tmp_path / "mine")
    assert (tmp_path / "mine" / "slide.svs").read_bytes() == b"x"


def test_cli_writes_a_root_that_data_verify_passes(tmp_path, capsys):
    from histoclr.cli import main

    with pytest.raises(SystemExit) as e:
        main(["data", "demo", "--root", str(tmp_path / "d")])
    assert e.value.code == 0 and "synthetic" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["data", "verify", "--root", str(tmp_path / "d"), str(tmp_path / "d" / "manifest.csv"), "-q"])
    assert e.value.code == 0 and "OK: the data root matches" in capsys.readouterr().out
