"""`histoclr finetune-seg` and `histoclr predict` invoked as a user would (CliRunner on the real group)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from histoclr.cli import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_config(shared_data, tmp_path):
    """A tiny fine-tuning config (1 train + 1 val MoNuSeg image, 64 px crops at 2 um/px)."""
    from histoclr.manifests.pairs import read_pairs_manifest, write_pairs_manifest

    pairs = read_pairs_manifest(REPO / "data_manifests" / "monuseg2018_seg_pairs.csv", shared_data)
    chosen = [next(p for p in pairs if p.split == "train"), next(p for p in pairs if p.split == "val")]
    write_pairs_manifest(chosen, tmp_path / "pairs.csv", shared_data)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""
pairs: {tmp_path / 'pairs.csv'}
data_root: {shared_data}
model: {{encoder: resnet18, architecture: deeplabv3, decoder_channels: 16}}
data: {{mpp: 2.0, crop_size: 64}}
train: {{epochs: 1, steps_per_epoch: 2, batch_size: 2, overlays: 1}}
tracking: {{experiment: cli-test}}
""")
    return cfg


def test_finetune_then_predict(small_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from histoclr.ssl.model import build_encoder, save_backbone

    backbone = save_backbone(tmp_path / "backbone.pt", build_encoder("resnet18"), "resnet18", {"run_id": "pre42"})
    runner = CliRunner()
    res = runner.invoke(cli, ["finetune-seg", "--config", str(small_config), "--init", f"simclr:{backbone}",
                              "--freeze", "stem,layer1-2", "--encoder-lr-mult", "0.1", "--num-labeled", "1",
                              "--seed", "1", "--out", str(tmp_path / "ft"), "--no-progress",
                              "train.val_overlap=0.5"])
    assert res.exit_code == 0, res.output
    assert "best_val_dice" in res.output and (tmp_path / "ft" / "best.pt").is_file()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.search_runs([client.get_experiment_by_name("cli-test").experiment_id])[0]
    p = run.data.params
    assert (p["init"], p["freeze"], p["num_labeled"], p["seed"], p["pretrain_run_id"], p["encoder_lr_mult"],
            p["train.val_overlap"]) == (f"simclr:{backbone}", "stem,layer1-2", "1", "1", "pre42", "0.1", "0.5")
    assert {"best_val_dice", "val_iou", "val_aji", "val_pq", "val_f1", "train_time_s"} <= set(run.data.metrics)

    # predict: one good image, one broken file -> the good one is written, exit status 1
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    res = runner.invoke(cli, ["predict", "--model", str(tmp_path / "ft" / "best.pt"), str(tmp_path / "bad.png"),
                              str(tmp_path / "good.png"), "--out", str(tmp_path / "pred"), "--mpp", "1.0"])
    assert res.exit_code == 1
    assert "bad.png" in res.output and "1 of 2 input(s) failed" in res.output
    labels = np.asarray(Image.open(tmp_path / "pred" / "good_instances.png"))
    assert labels.shape == (70, 90) and labels.dtype == np.uint16 and (tmp_path / "pred" / "good_overlay.png").is_file()
    assert "nuclei" in res.output and "post-processing" in res.output
    res = runner.invoke(cli, ["predict", "--model", str(tmp_path / "ft" / "best.pt"), str(tmp_path / "good.png"),
                              "--out", str(tmp_path / "pred"), "--mpp", "1.0", "--binary"])
    assert res.exit_code == 0, res.output
    assert set(np.unique(np.asarray(Image.open(tmp_path / "pred" / "good_mask.png"))).tolist()) <= {0, 255}


@pytest.mark.parametrize("args, expected", [
    (["--freeze", "layer9"], "layer1-3"),
    (["--init", "simclr:/nonexistent/backbone.pt"], "/nonexistent/backbone.pt: backbone file not found"),
    (["--num-labeled", "2", "--label-fraction", "0.5"], "at most one"),
    (["model.nonsense=1"], "nonsense"),
])
def test_finetune_user_errors_are_one_line(small_config, args, expected):
    res = CliRunner().invoke(cli, ["finetune-seg", "--config", str(small_config), "--no-progress", *args])
    assert res.exit_code == 2, res.output
    err = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and expected in err[0]


def test_predict_needs_a_usable_model(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    res = CliRunner().invoke(cli, ["predict", "--model", str(tmp_path / "missing.pt"), str(tmp_path / "x.png"),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "missing.pt: model checkpoint not found" in res.output
    res = CliRunner().invoke(cli, ["predict", "--model", str(tmp_path / "m.pt"), str(tmp_path / "x.png"),
                                   "--out", str(tmp_path / "o"), "--region", "1,2,3"])
    assert res.exit_code == 2 and "x,y,w,h" in res.output
