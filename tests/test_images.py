"""The image low layer: RGB/label reads, resolution from metadata with its plausibility check,
ImageNet normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from histoclr.errors import InputFileError
from histoclr.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TILE_INPUT_SUFFIXES,
    WSI_SUFFIXES,
    _decode_rgb_opencv,
    as_rgb_uint8,
    decode_image,
    image_mpp,
    image_shape,
    normalize_image,
    read_label,
    read_rgb,
)


def test_suffix_lists_have_one_meaning_each():
    assert set(WSI_SUFFIXES) <= set(TILE_INPUT_SUFFIXES)
    assert ".tif" in TILE_INPUT_SUFFIXES and ".tif" not in WSI_SUFFIXES  # a TIFF may be a plain image
    assert ".png" in TILE_INPUT_SUFFIXES and ".dcm" in TILE_INPUT_SUFFIXES


def test_as_rgb_uint8_grey_16bit_and_alpha_on_white():
    grey = np.full((2, 3), 7, np.uint8)
    assert as_rgb_uint8(grey).shape == (2, 3, 3) and (as_rgb_uint8(grey) == 7).all()
    assert (as_rgb_uint8(np.full((2, 2, 3), 65535, np.uint16)) == 255).all()
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 255)   # opaque black stays black
    rgba[0, 1] = (0, 0, 0, 0)     # transparent becomes white
    assert as_rgb_uint8(rgba).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    with pytest.raises(InputFileError, match="x.png: unsupported pixel type float32"):
        as_rgb_uint8(np.zeros((2, 2, 3), np.float32), "x.png")


def test_read_rgb_png_palette_and_tiff(tmp_path):
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    tifffile.imwrite(tmp_path / "a.tif", rgb)
    assert np.array_equal(read_rgb(tmp_path / "a.png"), rgb)
    assert np.array_equal(read_rgb(tmp_path / "a.tif"), rgb)
    assert read_rgb(tmp_path / "p.png").shape == (4, 5, 3)  # palette expanded, not indices
    assert image_shape(tmp_path / "a.tif") == image_shape(tmp_path / "a.png") == (4, 5)


def test_unreadable_files_one_line_or_the_decoders_own_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputFileError, match=r"bad.png: cannot read image \(UnidentifiedImageError"):
        read_rgb(bad)
    with pytest.raises(InputFileError, match="missing.tif: file not found"):
        read_rgb(tmp_path / "missing.tif")
    with pytest.raises(OSError):
        decode_image(bad)  # for loops that report the reason themselves


def test_mpp_from_metadata_with_plausibility_check(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    tifffile.imwrite(tmp_path / "ok.tif", rgb, resolution=(40000.0, 40000.0), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "dpi72.tif", rgb, resolution=(72.0, 72.0), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "none.tif", rgb)
    Image.fromarray(rgb).save(tmp_path / "a.png", dpi=(101600, 101600))  # 0.25 um/px
    assert image_mpp(tmp_path / "ok.tif") == pytest.approx(0.25)
    assert image_mpp(tmp_path / "dpi72.tif") is None  # 352.8 um/px: a default, not a microscope's
    assert image_mpp(tmp_path / "none.tif") is None
    assert image_mpp(tmp_path / "a.png") == pytest.approx(0.25, rel=1e-3)
    assert decode_image(tmp_path / "ok.tif").mpp == pytest.approx(0.25)


def test_read_label_keeps_values_and_rejects_colour(tmp_path):
    lab = np.array([[0, 1], [2, 300]], np.uint16)
    tifffile.imwrite(tmp_path / "l.tif", lab)
    assert read_label(tmp_path / "l.tif").tolist() == lab.tolist()
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (1, 2, 3)
    Image.fromarray(colour).save(tmp_path / "c.png")
    with pytest.raises(InputFileError, match="must have one channel"):
        read_label(tmp_path / "c.png")


def test_normalize_image_to_chw():
    img = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    x = normalize_image(img)
    assert x.shape == (3, 6, 7) and x.dtype == torch.float32
    m, s = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(x, (torch.from_numpy(img).permute(2, 0, 1) / 255.0 - m) / s, atol=1e-6)
    with pytest.raises(ValueError, match="RGB uint8"):
        normalize_image(img.astype(np.float32))


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_decode_image_opencv_path_gives_pillows_pixels(tmp_path, fmt, suffix):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / f"tile{suffix}"
    Image.fromarray(rgb).save(path, format=fmt, dpi=(50800, 50800))  # 0.5 um/px
    with Image.open(path) as im:
        assert _decode_rgb_opencv(path.read_bytes(), im) is not None  # the fast path is the one taken
        reference = np.asarray(im.convert("RGB"))
    decoded = decode_image(path)
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.flags.c_contiguous
    np.testing.assert_array_equal(decoded.rgb, reference)
    assert decoded.format == fmt.lower() and decoded.mpp == pytest.approx(0.5, rel=1e-3)


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_decode_image_truncated_file_still_raises(tmp_path, fmt, suffix):
    rng = np.random.default_rng(1)
    path = tmp_path / f"tile{suffix}"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as im:
        assert _decode_rgb_opencv(path.read_bytes(), im) is None  # OpenCV declines; Pillow decodes and raises
    with pytest.raises(OSError):
        decode_image(path)
    with pytest.raises(InputFileError, match="tile"):
        read_rgb(path)


def test_decode_image_grey_and_rgba_go_through_pillow(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    rgba = np.dstack([np.full((6, 8, 3), 10, np.uint8), np.full((6, 8), 255, np.uint8)])
    for name, arr in (("grey.png", grey), ("rgba.png", rgba)):
        path = tmp_path / name
        Image.fromarray(arr).save(path)
        with Image.open(path) as im:
            assert _decode_rgb_opencv(path.read_bytes(), im) is None
    np.testing.assert_array_equal(decode_image(tmp_path / "grey.png").rgb[..., 1], grey)
    np.testing.assert_array_equal(decode_image(tmp_path / "rgba.png").rgb, np.full((6, 8, 3), 10, np.uint8))
