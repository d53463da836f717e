"""Freeze grammar, frozen weights and BatchNorm statistics, parameter groups."""

from __future__ import annotations

import pytest
import torch

from histoclr.config.seg import STAGES, FinetuneConfig, parse_freeze_spec
from histoclr.seg.freeze import apply_freeze, stage_modules, trainable_parameter_counts
from histoclr.seg.model import build_seg_model
from histoclr.seg.train import build_optimizer


@pytest.mark.parametrize("spec, expected", [
    ("none", set()),
    ("all", set(STAGES)),
    ("stem", {"stem"}),
    ("layer3", {"layer3"}),
    ("layer1-2", {"layer1", "layer2"}),
    ("layer2-4", {"layer2", "layer3", "layer4"}),
    ("stem,layer1-3", {"stem", "layer1", "layer2", "layer3"}),
    (" Stem , layer4 ", {"stem", "layer4"}),
    ("layer1-layer2", {"layer1", "layer2"}),
])
def test_parse_valid_specs(spec, expected):
    assert parse_freeze_spec(spec) == expected


@pytest.mark.parametrize("spec", ["layer5", "layer3-1", "", "stem,,layer1", "encoder", "layer1-5"])
def test_parse_invalid_specs_list_valid_names(spec):
    with pytest.raises(ValueError) as e:
        parse_freeze_spec(spec)
    msg = str(e.value)
    for name in ("none", "all", *STAGES, "layer1-3"):
        assert name in msg


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


def test_frozen_weights_and_bn_stats_unchanged_after_training_steps():
    torch.manual_seed(0)
    model = build_seg_model("resnet18", output_stride=16, decoder_channels=32)
    apply_freeze(model, parse_freeze_spec("stem,layer1-2"))
    before = _snapshot(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()  # must not put the frozen BatchNorm layers back in training mode
    for bn in stage_modules(model.encoder, "layer1")[0].modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            assert not bn.training
    assert model.encoder.layer3.training and model.encoder.layer3[0].bn1.training
    for _ in range(2):
        x = torch.randn(2, 3, 64, 64)
        y = torch.randint(0, 2, (2, 64, 64))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.net.state_dict()
    frozen = ("encoder.conv1.", "encoder.bn1.", "encoder.layer1.", "encoder.layer2.")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for k in before:
        if k.startswith(frozen):
            assert k not in changed, f"frozen tensor {k} changed"
    # unfrozen weights and BatchNorm running statistics did change
    assert "encoder.layer3.0.conv1.weight" in changed
    assert "encoder.layer4.1.bn2.running_mean" in changed
    assert any(k.startswith("decoder.") for k in changed)
    assert "segmentation_head.0.weight" in changed


def test_trainable_counts_and_param_groups():
    model = build_seg_model("resnet18", decoder_channels=32)
    full = trainable_parameter_counts(model)
    apply_freeze(model, parse_freeze_spec("all"))
    counts = trainable_parameter_counts(model)
    assert all(counts[s] == 0 for s in STAGES)
    assert counts["decoder"] == full["decoder"] > 0 and counts["total"] == counts["decoder"]
    apply_freeze(model, parse_freeze_spec("layer1-2"))  # re-freezing replaces the previous choice
    counts = trainable_parameter_counts(model)
    assert counts["layer1"] == counts["layer2"] == 0 and counts["layer3"] == full["layer3"] > 0
    cfg = FinetuneConfig(encoder_lr_mult=0.1)
    cfg.train.lr, cfg.train.weight_decay = 1e-3, 1e-4
    groups = build_optimizer(model, cfg).param_groups
    by_name = {g["name"]: g for g in groups}
    assert by_name["encoder"]["lr"] == pytest.approx(1e-4) and by_name["decoder"]["lr"] == pytest.approx(1e-3)
    assert by_name["decoder_no_decay"]["weight_decay"] == 0.0
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == counts["total"]


def test_apply_freeze_rejects_unknown_stage_and_plain_modules():
    model = build_seg_model("resnet18", decoder_channels=32)
    with pytest.raises(ValueError, match="layer9"):
        apply_freeze(model, {"layer9"})
    with pytest.raises(ValueError, match="does not support"):
        apply_freeze(torch.nn.Linear(2, 2), {"stem"})
