"""Sliding-window prediction, resampling to the model's mpp, mask/overlay files, slide regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from histoclr.errors import InputFileError
from histoclr.seg.model import build_seg_model, load_seg_checkpoint, save_seg_checkpoint
from histoclr.seg.predict import (
    foreground,
    predict_file,
    predict_image,
    read_input,
    sliding_window_predict,
    window_starts,
)


@pytest.mark.parametrize("size, window, overlap", [(100, 32, 0.25), (32, 32, 0.5), (20, 32, 0.25), (65, 32, 0.0)])
def test_window_starts_cover_the_image(size, window, overlap):
    starts = window_starts(max(size, window), window, overlap)
    covered = np.zeros(max(size, window), bool)
    for s in starts:
        covered[s:s + window] = True
    assert covered.all() and starts[0] == 0 and starts[-1] + window == max(size, window)


@pytest.mark.parametrize("h, w", [(70, 45), (20, 100), (64, 64)])
def test_sliding_window_equals_whole_image_for_a_pixelwise_model(h, w):
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, kernel_size=1)   # per-pixel: blending must reproduce it exactly
    x = torch.randn(3, h, w)
    probs = sliding_window_predict(model, x, window=32, overlap=0.5, batch_size=3)
    assert probs.shape == (2, h, w)
    with torch.no_grad():
        expected = torch.softmax(model(x[None]), dim=1)[0]
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    assert model.training  # mode restored


def test_sliding_window_sigmoid_for_one_class_and_bad_args():
    model = torch.nn.Conv2d(3, 1, kernel_size=1)
    probs = sliding_window_predict(model, torch.randn(3, 40, 50), window=32)
    assert probs.shape == (1, 40, 50) and float(probs.min()) >= 0 and float(probs.max()) <= 1
    assert foreground(probs).shape == (40, 50)
    with pytest.raises(ValueError):
        sliding_window_predict(model, torch.randn(40, 50), window=32)
    with pytest.raises(ValueError):
        sliding_window_predict(model, torch.randn(3, 40, 50), window=32, overlap=1.0)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_seg_model("resnet18", decoder_channels=16)
    return load_seg_checkpoint(save_seg_checkpoint(tmp_path / "m.pt", model, mpp=0.5, window=64))


def test_predict_image_returns_input_size(checkpoint):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    prob = predict_image(checkpoint, image, image_mpp=0.25)   # resampled to 45 x 65 and back
    assert prob.shape == (90, 130) and prob.dtype == np.float32
    assert 0 <= prob.min() and prob.max() <= 1
    with pytest.raises(ValueError, match="mpp is unknown"):
        predict_image(checkpoint, image, image_mpp=None)


def test_predict_file_writes_mask_and_overlay(checkpoint, tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (75, 110, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    res = predict_file(checkpoint, tmp_path / "img.png", tmp_path / "out", mpp=0.5)
    mask = np.asarray(Image.open(res["mask"]))
    assert res["mask"].name == "img_mask.png" and mask.shape == (75, 110)
    assert set(np.unique(mask)) <= {0, 255}
    assert np.asarray(Image.open(res["overlay"])).shape == (75, 110, 3)
    res = predict_file(checkpoint, tmp_path / "img.png", tmp_path / "out", assume_mpp=0.5,
                       mask_format="tiff", labels=True)
    import tifffile

    labels = tifffile.imread(res["mask"])
    assert res["mask"].suffix == ".tif" and labels.shape == (75, 110) and labels.max() == res["nuclei"]


def test_read_input_errors_name_the_file(checkpoint, tmp_path):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(InputFileError, match="a.png.*mpp"):
        read_input(tmp_path / "a.png", model_mpp=0.5)
    with pytest.raises(InputFileError, match="not inside"):
        read_input(tmp_path / "a.png", (30, 0, 40, 10), mpp=0.5, model_mpp=0.5)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(InputFileError, match="broken.tif"):
        predict_file(checkpoint, tmp_path / "broken.tif", tmp_path / "out", mpp=0.5)


def test_slide_region_through_openslide(shared_data, checkpoint, tmp_path):
    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    rgb, mpp, shape, name = read_input(slide, (200, 300, 120, 90), model_mpp=0.5)
    assert shape == (90, 120) and rgb.shape == (90, 120, 3) and mpp == pytest.approx(0.499, abs=1e-3)
    assert name == "CMU-1-Small-Region_x200_y300_w120_h90"
    res = predict_file(checkpoint, slide, tmp_path / "out", region=(200, 300, 120, 90))
    assert np.asarray(Image.open(res["mask"])).shape == (90, 120)
