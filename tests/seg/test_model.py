"""Model construction, encoder initialisation (SimCLR backbone, ImageNet, random), checkpoints."""

from __future__ import annotations

import pytest
import torch

from histoclr.errors import HistoclrError, InputFileError
from histoclr.seg.model import (
    build_seg_model,
    init_encoder,
    load_seg_checkpoint,
    save_seg_checkpoint,
)
from histoclr.seg.postprocess import default_params
from histoclr.ssl.model import build_encoder, save_backbone


@pytest.mark.parametrize("arch, os_", [("deeplabv3", 16), ("deeplabv3plus", 8)])
@pytest.mark.parametrize("classes", [1, 2])
def test_output_shape(arch, os_, classes):
    model = build_seg_model("resnet18", arch, os_, classes, decoder_channels=16).eval()
    assert model(torch.randn(1, 3, 64, 96)).shape == (1, classes, 64, 96)


def test_simclr_backbone_loads_exactly(tmp_path):
    torch.manual_seed(1)
    enc = build_encoder("resnet18")
    path = save_backbone(tmp_path / "backbone.pt", enc, "resnet18", {"run_id": "abc123"})
    model = build_seg_model("resnet18", decoder_channels=16)
    info = init_encoder(model, f"simclr:{path}")
    assert info["pretrain_run_id"] == "abc123"
    expected = {k: v for k, v in enc.state_dict().items()}
    got = model.encoder.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k


def test_backbone_with_wrong_key_or_shape_lists_them(tmp_path):
    enc = build_encoder("resnet18")
    path = save_backbone(tmp_path / "b.pt", enc, "resnet18")
    payload = torch.load(path, weights_only=True)
    sd = payload["state_dict"]
    sd["layer9.weight"] = torch.zeros(1)
    sd["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    del sd["bn1.bias"]
    torch.save(payload, path)
    with pytest.raises(InputFileError) as e:
        init_encoder(build_seg_model("resnet18", decoder_channels=16), f"simclr:{path}")
    msg = str(e.value)
    assert str(path) in msg and "layer9.weight" in msg and "layer1.0.conv1.weight" in msg and "bn1.bias" in msg
    assert "\n" not in msg


def test_backbone_arch_mismatch_is_clear(tmp_path):
    path = save_backbone(tmp_path / "b34.pt", build_encoder("resnet34"), "resnet34")
    with pytest.raises(InputFileError, match="resnet34 but the segmentation model's encoder is resnet18"):
        init_encoder(build_seg_model("resnet18", decoder_channels=16), f"simclr:{path}")


def test_missing_backbone_file(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        init_encoder(build_seg_model("resnet18", decoder_channels=16), f"simclr:{tmp_path / 'nope.pt'}")


def test_imagenet_offline_without_file_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached weights
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")         # and no network
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(HistoclrError) as e:
        init_encoder(build_seg_model("resnet18", decoder_channels=16), "imagenet")
    assert "--imagenet-weights" in str(e.value) and "\n" not in str(e.value)


def test_imagenet_from_local_file(tmp_path):
    torch.manual_seed(2)
    tv = build_encoder("resnet18")
    sd = {**tv.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save(sd, tmp_path / "resnet18.pth")
    model = build_seg_model("resnet18", decoder_channels=16)
    init_encoder(model, "imagenet", tmp_path / "resnet18.pth")
    assert torch.equal(model.encoder.layer2[0].conv1.weight, tv.layer2[0].conv1.weight)


def test_checkpoint_roundtrip(tmp_path):
    model = build_seg_model("resnet18", "deeplabv3plus", 8, 1, decoder_channels=16)
    save_seg_checkpoint(tmp_path / "m.pt", model, mpp=0.5, window=64, metadata={"epoch": 3},
                        postprocess=default_params("binary", h=2.0))
    ck = load_seg_checkpoint(tmp_path / "m.pt")
    assert ck.mpp == 0.5 and ck.window == 64 and ck.metadata["epoch"] == 3
    assert ck.postprocess == default_params("binary", h=2.0)
    assert ck.model.spec == model.spec and not ck.model.training
    for k, v in model.net.state_dict().items():
        assert torch.equal(ck.model.net.state_dict()[k], v)
    assert ck.model.precision == "32" and not ck.model.channels_last
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputFileError, match="bad.pt"):
        load_seg_checkpoint(tmp_path / "bad.pt")


def test_checkpoint_predicts_at_the_precision_it_was_validated_at(tmp_path):
    torch.manual_seed(0)
    model = build_seg_model("resnet18", "deeplabv3plus", 16, 2, decoder_channels=16, target="contour").eval()
    model.set_compute("bf16", channels_last=True)
    save_seg_checkpoint(tmp_path / "m.pt", model, mpp=0.25, window=64, postprocess=default_params("contour"))
    ck = load_seg_checkpoint(tmp_path / "m.pt")
    assert ck.model.precision == "bf16" and ck.model.channels_last
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ck.model(x), model(x))               # bit for bit what validation computed
    payload = torch.load(tmp_path / "m.pt", weights_only=False)
    torch.save({**payload, "compute": {"precision": "fp8"}}, tmp_path / "bad.pt")
    with pytest.raises(InputFileError, match="bad.pt.*invalid compute setting"):
        load_seg_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize("architecture", ["deeplabv3", "deeplabv3plus"])
@pytest.mark.parametrize("target, channels", [("binary", 2), ("contour", 3), ("distance", 3)])
def test_every_architecture_with_every_target(architecture, target, channels):
    model = build_seg_model("resnet18", architecture, decoder_channels=16, target=target).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, channels, 64, 64)


def test_bf16_channels_last_compute_keeps_float32_logits_close_to_fp32():
    torch.manual_seed(0)
    model = build_seg_model("resnet18", "deeplabv3plus", 16, 2, decoder_channels=16, target="contour").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model.set_compute("bf16", channels_last=True)
        out = model(x)
    assert model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert not torch.equal(out, ref)                           # bf16 convolutions did run
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()     # ... and agree with fp32 to bf16 precision
    model.train()
    out = model(x)
    out.sum().backward()                                       # gradients flow through the autocast
    assert model.encoder.conv1.weight.grad is not None and model.encoder.conv1.weight.grad.dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        model.set_compute("fp16")
