"""Tiling a synthetic pyramid through OpenSlide: level choice, grid, tissue filter, manifests,
failures of single slides, option checks and parallel runs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from histoclr.config import load_config
from histoclr.config.tile import TileConfig
from histoclr.errors import ConfigError, HistoclrError
from histoclr.manifests.tiles import TILE_COLUMNS, read_tile_manifest
from histoclr.slides.inputs import find_slides
from histoclr.slides.reader import open_slide
from histoclr.slides.synthetic import write_pyramid_tiff
from histoclr.slides.tiler import grid, tile_slides


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    """2048x1536 at 0.25 µm/px, 3 levels; tissue on the left half (x < 1024), glass elsewhere."""
    p = tmp_path_factory.mktemp("pyr") / "pyr.tif"
    return write_pyramid_tiff(p, 2048, 1536, mpp=0.25, tissue=[(0, 0, 1024, 1536)], levels=3)


def cfg(*overrides: str) -> TileConfig:
    return load_config(TileConfig, None, ["tissue.thumbnail_size=512", *overrides])


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_grid():
    xs, ys = grid(1000, 300, 256, 256)
    assert xs.tolist() == [0, 256, 512] and ys.tolist() == [0]
    assert grid(100, 100, 256, 256)[0].size == 0
    assert grid(512, 512, 256, 128)[0].tolist() == [0, 128, 256]
    assert grid(1000, 10, 221.6, 221.6)[0].tolist() == [0, 222, 443, 665]


def test_tile_pyramid_at_0_5_mpp(pyramid, tmp_path):
    out = tmp_path / "out"
    res = tile_slides(find_slides([pyramid]), cfg("tile_size=128", "mpp=0.5"), out, progress=False)
    assert (res.ok, res.failed, res.tiles) == (1, 0, 24)
    df = read_tile_manifest(out)
    assert list(df.columns[:len(TILE_COLUMNS)]) == list(TILE_COLUMNS)
    # 0.5 µm/px from a 0.25 µm/px slide: level 1 (exactly 0.5), 128 px read, 256 level-0 px per tile
    assert set(df.level) == {1} and set(df.read_size) == {128} and set(df.out_size) == {128}
    assert set(df.mpp) == {0.5}
    # tissue (x < 1024) kept, glass dropped: 4 columns x 6 rows
    assert sorted(set(df.x)) == [0, 256, 512, 768] and sorted(set(df.y)) == [0, 256, 512, 768, 1024, 1280]
    assert (df.tissue_fraction >= 0.5).all()
    assert list(df.itertuples(index=False, name=None)) == sorted(
        df.itertuples(index=False, name=None), key=lambda r: (r[3], r[2]))   # row-major order
    first = df.iloc[5]
    assert first.tile_path.endswith(f"tiles/pyr/pyr_x{first.x}_y{first.y}.png")
    with open_slide(pyramid) as s:   # a tile is exactly the region read at its level
        expected = s.read_region((int(first.x), int(first.y)), 1, (128, 128))
    np.testing.assert_array_equal(np.asarray(Image.open(first.tile_path)), expected)
    slides = (out / "slides.csv").read_text().splitlines()
    assert slides[1].split(",")[4:] == ["2048", "1536", "0.25", "metadata", "generic-tiff", "24", "ok", ""]
    assert (out / "qc" / "pyr.png").is_file()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_other_resolutions_levels_and_overlap(pyramid, tmp_path):
    r = tile_slides(find_slides([pyramid]), cfg("tile_size=64", "mpp=1.0"), tmp_path / "a", progress=False)
    df = read_tile_manifest(tmp_path / "a")
    assert set(df.level) == {2} and set(df.read_size) == {64} and r.tiles == 24
    tile_slides(find_slides([pyramid]), cfg("tile_size=64", "mpp=0.7"), tmp_path / "b", progress=False)
    df = read_tile_manifest(tmp_path / "b")
    assert set(df.level) == {1} and set(df.read_size) == {90}   # 64 * 0.7 / 0.5, resized to 64
    assert Image.open(df.tile_path[0]).size == (64, 64)
    tile_slides(find_slides([pyramid]), cfg("tile_size=128", "mpp=null", "level=0", "stride=64",
                                            "format=jpeg"), tmp_path / "c", progress=False)
    df = read_tile_manifest(tmp_path / "c")
    assert set(df.level) == {0} and set(df.mpp) == {0.25}
    assert sorted(set(df.x))[:3] == [0, 64, 128]
    assert max(df.x) == 960  # half on tissue (960..1088, tissue ends at 1024): 0.5 is kept
    assert ((df.tissue_fraction[df.x == 960] - 0.5).abs() < 0.05).sum() == 23  # 23 rows
    assert df.tile_path[0].endswith(".jpg") and Image.open(df.tile_path[0]).format == "JPEG"


def test_config_validation():
    for bad, key in [("tile_size=0", "tile_size"), ("mpp=-1", "mpp"), ("min_tissue=2", "min_tissue"),
                     ("level=1", "exactly one"), ("format=gif", "format")]:
        with pytest.raises(ConfigError, match=key):
            load_config(TileConfig, None, [bad])


def test_bad_slide_among_good_ones(pyramid, tmp_path):
    good = shutil.copy(pyramid, tmp_path / "good.tif")
    (tmp_path / "garbage.svs").write_bytes(b"\x00garbage" * 1000)
    data = pyramid.read_bytes()
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) // 2])
    logged = []
    res = tile_slides(find_slides([tmp_path]), cfg("tile_size=128"), tmp_path / "out",
                      progress=False, log=logged.append)
    assert (res.ok, res.failed, res.tiles) == (1, 2, 24)
    assert len(logged) == 2 and all(len(m.splitlines()) == 1 for m in logged)
    assert any("garbage.svs" in m for m in logged) and any("truncated.tif" in m for m in logged)
    rows = {r["slide_id"]: r for r in res.slides}
    assert rows["good"]["status"] == "ok" and rows["good"]["slide_path"] == str(good)
    assert rows["garbage"]["status"] == rows["truncated"]["status"] == "failed"
    assert "garbage.svs" in rows["garbage"]["error"]
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "tiles").iterdir()) == ["good"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert "failed" in (out / "slides.csv").read_text()


def test_rerun_skips_finished_and_refuses_other_options(pyramid, tmp_path):
    out = tmp_path / "out"
    specs = find_slides([pyramid])
    tile_slides(specs, cfg("tile_size=128"), out, progress=False)
    before = snapshot(out)
    again = tile_slides(specs, cfg("tile_size=128"), out, progress=False)
    assert again.skipped == 1 and snapshot(out) == before
    with pytest.raises(HistoclrError, match="tile_size: 128 before, 96 now"):
        tile_slides(specs, cfg("tile_size=96"), out, progress=False)


def test_two_workers_write_the_same_files_as_one(pyramid, tmp_path):
    second = shutil.copy(pyramid, tmp_path / "second.tif")
    specs = find_slides([pyramid, second])
    c = cfg("tile_size=64", "mpp=0.5")
    tile_slides(specs, c, tmp_path / "one", workers=1, progress=False)
    tile_slides(specs, c, tmp_path / "two", workers=2, progress=False)
    one, two = snapshot(tmp_path / "one"), snapshot(tmp_path / "two")
    assert len([k for k in one if k.endswith(".png") and k.startswith("tiles")]) == 2 * 96
    assert one == two
