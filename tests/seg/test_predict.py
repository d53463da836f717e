"""Sliding-window prediction, resampling to the model's mpp, instance/mask/overlay files of images and
slide regions (through histoclr.seg.slide_predict, the one file path), the checkpoint's post-processing
applied."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from histoclr.errors import InputFileError
from histoclr.seg.model import build_seg_model, load_seg_checkpoint, save_seg_checkpoint
from histoclr.seg.postprocess import PostprocessParams, default_params, foreground_probability
from histoclr.seg.predict import predict_image, sliding_window_predict, window_starts
from histoclr.seg.slide_predict import geometry_of, predict_input


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
    assert foreground_probability(probs.numpy()).shape == (40, 50)
    with pytest.raises(ValueError):
        sliding_window_predict(model, torch.randn(40, 50), window=32)
    with pytest.raises(ValueError):
        sliding_window_predict(model, torch.randn(3, 40, 50), window=32, overlap=1.0)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_seg_model("resnet18", decoder_channels=16)
    return load_seg_checkpoint(save_seg_checkpoint(tmp_path / "m.pt", model, mpp=0.5, window=64,
                                                   postprocess=default_params("binary", fg_threshold=0.45)))


def test_predict_image_returns_input_size(checkpoint):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    instances, prob = predict_image(checkpoint, image, image_mpp=0.25)   # resampled to 45 x 65 and back
    assert prob.shape == (90, 130) and prob.dtype == np.float32
    assert instances.shape == (90, 130) and instances.dtype == np.int32
    assert 0 <= prob.min() and prob.max() <= 1
    with pytest.raises(ValueError, match="mpp is unknown"):
        predict_image(checkpoint, image, image_mpp=None)


def test_predict_input_writes_instances_mask_and_overlay_of_an_image(checkpoint, tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (75, 110, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    res = predict_input(checkpoint, tmp_path / "img.png", tmp_path / "out", mpp=0.5, threshold=0.3, progress=False)
    labels = np.asarray(Image.open(res.files["mask"]))
    assert res.mode == "region" and res.files["mask"].endswith("img_instances.png")
    assert labels.shape == (75, 110) and labels.dtype == np.uint16
    assert res.nuclei >= 1 and set(np.unique(labels)) - {0} == set(range(1, res.nuclei + 1))
    assert np.asarray(Image.open(res.files["overlay"])).shape == (75, 110, 3)
    assert {"geojson", "csv"} <= set(res.files)
    res = predict_input(checkpoint, tmp_path / "img.png", tmp_path / "out", assume_mpp=0.5, mask_format="tiff",
                        binary=True, overwrite=True, progress=False)
    import tifffile

    mask = tifffile.imread(res.files["mask"])
    assert res.files["mask"].endswith("img_mask.tif") and mask.shape == (75, 110) and set(np.unique(mask)) <= {0, 255}


class _Painter(torch.nn.Module):
    """A 'network' whose contour output is fixed: two touching discs (interior / boundary classes)."""

    def __init__(self, classes: np.ndarray):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.logits = torch.from_numpy(np.stack([(classes == k) * 20.0 - 10.0 for k in range(3)])).float()

    def forward(self, x):
        return self.logits[None].expand(x.shape[0], -1, -1, -1) + 0 * self.w


def test_the_checkpoint_postprocessing_is_what_predict_applies(tmp_path):
    from histoclr.seg.targets import contour_classes

    yy, xx = np.mgrid[:64, :64]
    inst = np.zeros((64, 64), np.int32)
    inst[(yy - 32) ** 2 + (xx - 24) ** 2 <= 100] = 1
    inst[((yy - 32) ** 2 + (xx - 41) ** 2 <= 100) & (inst == 0)] = 2
    model = build_seg_model("resnet18", decoder_channels=16, target="contour")
    params = default_params("contour", marker_threshold=0.2, min_size=10)
    ck = load_seg_checkpoint(save_seg_checkpoint(tmp_path / "m.pt", model, mpp=None, window=64, postprocess=params))
    assert ck.postprocess == params                      # round trip of the parameters
    ck.model = _Painter(contour_classes(inst, 2))
    ck.model.spec = model.spec
    instances, _ = predict_image(ck, np.zeros((64, 64, 3), np.uint8), None)
    assert instances.max() == 2                          # the touching discs come out as two nuclei
    # a min_size larger than a disc removes both: the parameters really are the checkpoint's
    ck.postprocess = PostprocessParams.from_dict({**params.to_dict(), "min_size": 1000})
    assert predict_image(ck, np.zeros((64, 64, 3), np.uint8), None)[0].max() == 0


def test_a_checkpoint_from_before_instance_targets_loads_as_components(tmp_path):
    from dataclasses import asdict

    model = build_seg_model("resnet18", decoder_channels=16)
    spec = {k: v for k, v in asdict(model.spec).items() if k != "target"}
    torch.save({"format": "histoclr-seg-model", "version": 1, "spec": spec, "state_dict": model.net.state_dict(),
                "mpp": 0.5, "window": 64, "mean": [0.5] * 3, "std": [0.2] * 3, "metadata": {}}, tmp_path / "v1.pt")
    ck = load_seg_checkpoint(tmp_path / "v1.pt")
    assert ck.model.spec.target == "binary" and ck.postprocess.method == "components"
    torch.save({"format": "histoclr-seg-model", "version": 1, "spec": {**spec, "colour": 3},
                "state_dict": {}, "mpp": 0.5, "window": 64}, tmp_path / "odd.pt")
    with pytest.raises(InputFileError, match="odd.pt.*retrain") as e:
        load_seg_checkpoint(tmp_path / "odd.pt")
    assert "\n" not in str(e.value)


def test_input_errors_name_the_file(checkpoint, tmp_path):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(InputFileError, match="a.png.*mpp"):
        predict_input(checkpoint, tmp_path / "a.png", tmp_path / "out", progress=False)
    with pytest.raises(InputFileError, match="not inside"):
        predict_input(checkpoint, tmp_path / "a.png", tmp_path / "out", region=(30, 0, 40, 10), mpp=0.5,
                      progress=False)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(InputFileError, match="broken.tif"):
        predict_input(checkpoint, tmp_path / "broken.tif", tmp_path / "out", mpp=0.5, progress=False)


def test_slide_region_through_openslide(shared_data, checkpoint, tmp_path):
    from histoclr.slides.reader import open_slide

    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    with open_slide(slide) as s:
        geo = geometry_of(s, slide, (200, 300, 120, 90), model_mpp=0.5)
    assert geo.size0 == (120, 90) and geo.level == 0 and geo.scale == pytest.approx(0.998)
    assert geo.work_size == (120, 90)
    assert geo.base_mpp == pytest.approx(0.499, abs=1e-3)
    res = predict_input(checkpoint, slide, tmp_path / "out", region=(200, 300, 120, 90), binary=True, progress=False)
    assert res.name == "CMU-1-Small-Region_x200_y300_w120_h90"
    assert np.asarray(Image.open(res.files["mask"])).shape == (90, 120)
