"""Slide readers: OpenSlide pyramids, plain images, level choice for a target resolution."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
from PIL import Image

from histoclr.errors import InputFileError
from histoclr.slides.reader import OpenSlideReader, PlainImageReader, level_for_mpp, open_slide
from histoclr.slides.synthetic import write_pyramid_tiff


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    p = tmp_path_factory.mktemp("pyr") / "pyr.tif"
    return write_pyramid_tiff(p, 2048, 1536, mpp=0.25, tissue=[(0, 0, 1024, 1536)], levels=3)


def test_pyramid_is_read_by_openslide_with_levels_and_mpp(pyramid):
    raw = openslide.OpenSlide(str(pyramid))
    assert raw.level_count == 3 and "openslide.mpp-x" in raw.properties
    with open_slide(pyramid) as s:
        assert isinstance(s, OpenSlideReader)
        assert s.vendor == "generic-tiff"
        assert s.mpp == pytest.approx(0.25)
        assert s.level_dimensions == ((2048, 1536), (1024, 768), (512, 384))
        assert s.level_downsamples == pytest.approx((1, 2, 4))
        a = s.read_region((0, 0), 1, (100, 60))
        assert a.shape == (60, 100, 3) and a.dtype == np.uint8
        # left half is tissue (pink/purple), right half glass (near white)
        assert s.read_region((200, 200), 0, (64, 64)).mean() < 215
        assert s.read_region((1500, 200), 0, (64, 64)).min() > 225
        # outside the slide: white, not black
        assert s.read_region((2040, 1530), 0, (32, 32))[-1, -1].tolist() == [255, 255, 255]
        th = s.thumbnail(256)
        assert max(th.shape[:2]) == 256 and th.shape[2] == 3


@pytest.mark.parametrize("target, expected", [
    (0.25, (0, 224)),    # level 0 exactly
    (0.5, (1, 224)),     # level 1 exactly
    (0.505, (1, 226)),   # within 1 %: still level 1, slightly larger read
    (0.7, (1, 314)),     # between levels: the finer one, downsampled
    (1.0, (2, 224)),
    (3.0, (2, 672)),     # coarser than the pyramid: top level, downsampled
    (0.2, (0, 179)),     # finer than level 0: level 0, upsampled
])
def test_level_for_mpp(target, expected):
    assert level_for_mpp((1.0, 2.0, 4.0), 0.25, target, 224) == expected


def test_level_for_mpp_tolerates_openslide_rounded_downsamples():
    # odd level sizes give downsamples like 2.0003: 0.5 µm/px is still level 1
    assert level_for_mpp((1.0, 2.0003, 4.0011), 0.25, 0.5, 224) == (1, 224)
    with pytest.raises(ValueError):
        level_for_mpp((1.0,), 0.0, 0.5, 224)


def test_plain_png_has_no_mpp_and_pads_white(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    with open_slide(tmp_path / "a.png") as s:
        assert isinstance(s, PlainImageReader) and s.mpp is None and s.vendor == "plain-png"
        assert s.dimensions == (80, 50) and s.level_count == 1
        np.testing.assert_array_equal(s.read_region((10, 5), 0, (20, 10)), rgb[5:15, 10:30])
        edge = s.read_region((70, 40), 0, (20, 20))
        np.testing.assert_array_equal(edge[:10, :10], rgb[40:, 70:])
        assert (edge[10:] == 255).all() and (edge[:, 10:] == 255).all()


def test_plain_stripped_tiff_with_and_without_resolution(tmp_path):
    import tifffile

    rgb = np.full((40, 40, 3), 128, np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", rgb, photometric="rgb", compression="lzw")
    tifffile.imwrite(tmp_path / "res.tif", rgb, photometric="rgb", resolution=(1e4 / 0.3, 1e4 / 0.3),
                     resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "dpi72.tif", rgb, photometric="rgb", resolution=(72, 72),
                     resolutionunit="INCH")
    with open_slide(tmp_path / "plain.tif") as s:  # stripped: OpenSlide says unsupported
        assert s.vendor == "plain-tiff" and s.mpp is None
    with open_slide(tmp_path / "res.tif") as s:
        assert s.mpp == pytest.approx(0.3)
    with open_slide(tmp_path / "dpi72.tif") as s:  # a screen resolution is not a microscope's
        assert s.mpp is None


@pytest.mark.parametrize("content", [b"", b"not an image at all" * 100, b"II*\x00\x08\x00\x00\x00\x99"])
def test_unreadable_file_is_one_line_naming_it(tmp_path, content):
    p = tmp_path / "broken.svs"
    p.write_bytes(content)
    with pytest.raises(InputFileError) as e:
        open_slide(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="file not found"):
        open_slide(tmp_path / "nope.svs")


def test_open_wsi_reads_metadata_without_plain_fallback(pyramid, tmp_path):
    from histoclr.errors import InputFileError
    from histoclr.slides.reader import open_wsi

    with open_wsi(pyramid) as s:
        assert s.mpp == pytest.approx(0.25) and s.level_count == 3
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputFileError, match="broken.svs: OpenSlide cannot open this slide"):
        open_wsi(broken)
