"""MLflow run names say what a run is: pretraining (recipe, data mode, encoder, steps) and fine-tuning
cells (init, freeze, label budget, seed)."""

from __future__ import annotations

from histoclr.seg.naming import budget_label, display_init, finetune_run_name


def test_finetune_run_names():
    assert finetune_run_name("random", "none", 0.5, None, 0) == "init=random freeze=none labels=50% seed=0"
    assert finetune_run_name("simclr:runs/pre/snapshots/backbone_step000250.pt", "layer1-2", None, 2, 1) == (
        "init=simclr:backbone_step000250.pt freeze=layer1-2 labels=2img seed=1")
    assert budget_label(None, None) == "all" and budget_label(1.0, None) == "100%" and budget_label(0.25, None) == "25%"
    assert display_init("simclr:0123abcd") == "simclr:0123abcd" and display_init("imagenet") == "imagenet"


def test_pretraining_run_name():
    from histoclr.config.pretrain import PretrainConfig
    from histoclr.pretrain.run import run_name

    cfg = PretrainConfig()
    cfg.data.mode, cfg.model.arch, cfg.train.max_steps = "dense", "resnet50", 2000
    assert run_name(cfg) == "pretrain simclr histology dense resnet50 2000 steps"
