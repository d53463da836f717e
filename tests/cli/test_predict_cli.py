"""`histoclr predict` on whole slides as a user runs it (CliRunner on the real group): several slides with
one bad, the outputs, skip on re-run, --overwrite, --region, --mask-tiff, --model passed on as given."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from histoclr.cli import cli
from histoclr.seg.model import build_seg_model, save_seg_checkpoint
from histoclr.seg.postprocess import default_params
from histoclr.slides.synthetic import write_pyramid_tiff

FAST = ["--tile-size", "128", "--halo", "16", "--no-progress", "--device", "cpu"]


@pytest.fixture
def model(tmp_path):
    torch.manual_seed(0)
    net = build_seg_model("resnet18", decoder_channels=16)
    return save_seg_checkpoint(tmp_path / "m.pt", net, mpp=0.5, window=64,
                               postprocess=default_params("binary", fg_threshold=0.45))


@pytest.fixture
def slides(tmp_path):
    a = write_pyramid_tiff(tmp_path / "a.tif", 512, 384, 0.5, [(40, 40, 300, 300)], levels=2)
    b = write_pyramid_tiff(tmp_path / "b.tif", 384, 384, 0.5, [(100, 60, 380, 200)], levels=2)
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"II*\x00 not a slide")
    return a, bad, b


def run(*args):
    return CliRunner().invoke(cli, ["predict", *map(str, args)])


def test_several_slides_one_bad_then_skip_and_overwrite(model, slides, tmp_path):
    a, bad, b = slides
    out = tmp_path / "pred"
    res = run("--model", model, a, bad, b, "--out", out, "--mask-tiff", *FAST)
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "bad.svs" in errors[0] and "1 of 3 input(s) failed" in res.output
    for name in ("a", "b"):
        for suffix in (".geojson", "_nuclei.csv", "_overlay.png", "_summary.json", "_mask.tif"):
            assert (out / f"{name}{suffix}").is_file(), f"{name}{suffix}"
        assert not (out / f"{name}.parts").exists()
        summary = json.loads((out / f"{name}_summary.json").read_text())
        assert summary["mode"] == "slide" and summary["tissue_mm2"] > 0
        assert f"{name}: {summary['nuclei']} nuclei, " in res.output and "mm² tissue" in res.output
    with open(out / "a.geojson", encoding="utf-8") as f:
        assert json.load(f)["type"] == "FeatureCollection"
    assert np.asarray(Image.open(out / "a_overlay.png")).ndim == 3
    before = (out / "a_summary.json").stat().st_mtime_ns
    res = run("--model", model, a, "--out", out, "--mask-tiff", *FAST)
    assert res.exit_code == 0 and "skipped" in res.output, res.output
    assert (out / "a_summary.json").stat().st_mtime_ns == before       # nothing redone
    res = run("--model", model, a, "--out", out, "--mask-tiff", "--overwrite", *FAST)
    assert res.exit_code == 0 and "skipped" not in res.output, res.output
    after = (out / "a_summary.json").stat().st_mtime_ns
    assert after != before
    res = run("--model", model, a, "--out", out, "--mask-tiff", "--threshold", "0.6", *FAST)   # other settings
    assert res.exit_code == 0 and "skipped" not in res.output, res.output
    assert (out / "a_summary.json").stat().st_mtime_ns != after
    assert "precision 32" in res.output                                # as validated (an fp32 model)
    res = run("--model", model, a, "--out", out, "--mask-tiff", "--threshold", "0.6", "--precision", "bf16", *FAST)
    assert res.exit_code == 0 and "precision bf16" in res.output and "skipped" not in res.output, res.output


def test_region_writes_level0_labels(model, tmp_path):
    # a slide at 0.25 um/px and a 0.5 um/px model: the work grid is half the region, the labels are not
    a = write_pyramid_tiff(tmp_path / "a.tif", 512, 384, 0.25, [(40, 40, 300, 300)], levels=2)
    res = run("--model", model, a, "--region", "50,60,200,100", "--out", tmp_path / "r", *FAST)
    assert res.exit_code == 0, res.output
    labels = np.asarray(Image.open(tmp_path / "r" / "a_x50_y60_w200_h100_instances.png"))
    assert labels.shape == (100, 200) and labels.dtype == np.uint16
    assert (tmp_path / "r" / "a_x50_y60_w200_h100.geojson").is_file()


def test_model_is_passed_to_the_loader_as_given(monkeypatch, slides, tmp_path):
    import histoclr.seg.model as seg_model

    seen = []

    def fake_loader(uri, device="cpu"):
        seen.append(uri)
        raise seg_model.InputFileError(uri, "no such registered model")

    monkeypatch.setattr(seg_model, "load_seg_checkpoint", fake_loader)
    res = run("--model", "models:/nuclei/3", slides[0], "--out", tmp_path / "o", *FAST)
    assert seen == ["models:/nuclei/3"]
    assert res.exit_code == 2 and "models:/nuclei/3: no such registered model" in res.output
