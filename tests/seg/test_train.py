"""Fine-tuning on real MoNuSeg crops: loss goes down for every target, checkpoints, MLflow names, instance
metrics, post-processing chosen on the training images, resume, aborts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from histoclr.config.loader import load_config
from histoclr.config.seg import FinetuneConfig
from histoclr.errors import ConfigError, HistoclrError, InputFileError
from histoclr.seg.losses import build_loss
from histoclr.seg.train import build_optimizer, run_finetune

REPO = Path(__file__).resolve().parents[2]


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])   # this test's store (conftest)


@pytest.fixture
def pairs_csv(shared_data, tmp_path):
    """A 3-pair manifest: 2 train + 1 val MoNuSeg images of the shared data."""
    from histoclr.manifests.pairs import read_pairs_manifest, write_pairs_manifest


    pairs = read_pairs_manifest(REPO / "data_manifests" / "monuseg2018_seg_pairs.csv", shared_data)
    train = [p for p in pairs if p.split == "train"][:2]
    val = [p for p in pairs if p.split == "val"][:1]
    write_pairs_manifest(train + val, tmp_path / "pairs.csv", shared_data)
    return tmp_path / "pairs.csv"


def tiny_config(pairs_csv, shared_data, tmp_path, *overrides) -> FinetuneConfig:
    # 2 um/px makes the 1000 px images 126 px: a few 64 px windows per validation image
    return load_config(FinetuneConfig, None, [
        f"pairs={pairs_csv}", f"data_root={shared_data}", f"out_dir={tmp_path / 'run'}",
        "model.encoder=resnet18", "model.decoder_channels=16", "data.mpp=2.0", "data.crop_size=64",
        "train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=2", "train.overlays=1",
        "tracking.experiment=test-finetune", *overrides])


@pytest.mark.parametrize("target", ["binary", "contour", "distance"])
def test_a_few_steps_on_real_crops_lower_the_loss(pairs_csv, shared_data, target):
    from histoclr.manifests.pairs import read_pairs_manifest
    from histoclr.seg.dataset import SegCropDataset
    from histoclr.seg.model import build_seg_model

    torch.manual_seed(0)
    pairs = [p for p in read_pairs_manifest(pairs_csv, shared_data) if p.split == "train"]
    ds = SegCropDataset(pairs, 1.0, 64, samples_per_epoch=4, augment=False, seed=0, target=target)
    x = torch.stack([ds[i][0] for i in range(4)])
    y = {k: torch.stack([ds[i][1][k] for i in range(4)]) for k in ds[0][1]}
    assert 0 < (y["classes"] > 0).float().mean() < 1   # real crops with nuclei and background
    assert set(y) == ({"classes", "distance"} if target == "distance" else {"classes"})
    if target == "contour":
        assert set(torch.unique(y["classes"]).tolist()) == {0, 1, 2}
    cfg = FinetuneConfig()
    cfg.train.lr = 3e-3
    model = build_seg_model("resnet18", decoder_channels=16, target=target)
    opt = build_optimizer(model, cfg)
    loss_fn = build_loss(target, 2, 1.0, 1.0)
    model.train()
    losses = []
    for _ in range(4):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_run_finetune_logs_names_checkpoints_and_resumes(pairs_csv, shared_data, tmp_path):
    from histoclr.seg.model import load_seg_checkpoint

    cfg = tiny_config(pairs_csv, shared_data, tmp_path, "freeze=layer1-2", "num_labeled=1", "seed=3",
                      "model.target=contour")
    result = run_finetune(cfg, progress=False)
    for k in ("run_id", "best_val_dice", "val_iou", "val_aji", "val_pq", "val_dq", "val_sq", "val_f1",
              "train_time_s"):
        assert k in result and 0 <= result[k] if k != "run_id" else True
    assert 0 <= result["best_val_dice"] <= 1 and result["num_labeled"] == 1 and result["epochs_run"] == 2
    run = _client().get_run(result["run_id"])
    p, m = run.data.params, run.data.metrics
    assert p["init"] == "random" and p["freeze"] == "layer1-2" and p["num_labeled"] == "1"
    assert p["seed"] == "3" and p["encoder"] == "resnet18" and p["pretrain_run_id"] == "none"
    assert p["label_fraction"] == "0.5" and p["trainable_params.layer1"] == "0"
    assert int(p["trainable_params.layer3"]) > 0
    assert p["target"] == "contour" and p["train.select_metric"] == "aji"
    for k in ("best_val_dice", "val_iou", "val_aji", "val_pq", "val_f1", "train_time_s", "epoch_val_dice",
              "epoch_val_aji", "train_loss"):
        assert k in m
    assert p["postprocess_chosen.method"] == "contour"
    for k in ("best_val_dice", "val_aji", "val_pq", "val_f1", "val_iou"):   # the run's result, not the last epoch
        assert m[k] == pytest.approx(result[k]), k
    history = _client().get_metric_history(result["run_id"], "epoch_val_dice")
    assert [h.step for h in history] == [1, 2]
    assert [h.step for h in _client().get_metric_history(result["run_id"], "val_aji")] == [0]
    arts = {a.path for a in _client().list_artifacts(result["run_id"], "model")}
    assert "model/best.pt" in arts
    assert any(a.path.endswith(".png") for a in _client().list_artifacts(result["run_id"], "overlays"))
    out = tmp_path / "run"
    ck = load_seg_checkpoint(out / "best.pt")
    assert ck.mpp == 2.0 and ck.window == 64 and ck.metadata["epoch"] == result["best_epoch"]
    # the best epoch is the one with the best validation AJI (with the configured post-processing)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert result["best_epoch"] == 1 + max(range(2), key=lambda i: (history[i]["val_aji"], -i))
    # the post-processing chosen on the training images is the checkpoint's, and in the search table
    search = json.loads((out / "postprocess_search.json").read_text())
    assert ck.postprocess.to_dict() == search["chosen"] == result["postprocess"]
    assert ck.model.spec.target == "contour"
    assert max(r["score"] for r in search["table"]) == pytest.approx(
        next(r["score"] for r in search["table"] if {k: r[k] for k in search["chosen"]} == search["chosen"]))
    # resuming a finished run re-uses the same MLflow run and trains nothing more
    again = run_finetune(cfg, progress=False)
    assert again["run_id"] == result["run_id"] and again["epochs_run"] == 2
    assert again["best_val_dice"] == pytest.approx(result["best_val_dice"])
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2
    # a different configuration in the same out_dir is refused
    other = tiny_config(pairs_csv, shared_data, tmp_path, "freeze=none", "num_labeled=1", "seed=3")
    with pytest.raises(InputFileError, match="different configuration"):
        run_finetune(other, progress=False)


def test_run_finetune_with_parent_run_and_tags(pairs_csv, shared_data, tmp_path):
    client = _client()
    exp = client.create_experiment("parent-exp")
    parent = client.create_run(exp).info.run_id
    cfg = tiny_config(pairs_csv, shared_data, tmp_path, "train.epochs=1", "train.steps_per_epoch=1",
                      "label_fraction=1.0", "train.overlays=0")
    result = run_finetune(cfg, parent_run_id=parent, extra_tags={"cell": "x"}, progress=False)
    tags = client.get_run(result["run_id"]).data.tags
    assert tags["mlflow.parentRunId"] == parent and tags["cell"] == "x"
    assert client.get_run(result["run_id"]).data.params["num_labeled"] == "2"


def test_non_finite_loss_aborts_and_marks_the_run_failed(pairs_csv, shared_data, tmp_path):
    cfg = tiny_config(pairs_csv, shared_data, tmp_path, "train.lr=1e30", "train.optimizer=sgd",
                      "train.epochs=1", "train.steps_per_epoch=4")
    with pytest.raises(HistoclrError, match="training diverged at step [0-9]+: loss is (nan|inf).*lower train.lr"):
        run_finetune(cfg, progress=False)
    runs = _client().search_runs([_client().get_experiment_by_name("test-finetune").experiment_id])
    assert runs[0].info.status == "FAILED"


def test_config_validation():
    with pytest.raises(ConfigError, match="freeze"):
        load_config(FinetuneConfig, None, ["freeze=layer7"])
    with pytest.raises(ConfigError, match="at most one"):
        load_config(FinetuneConfig, None, ["num_labeled=2", "label_fraction=0.5"])
    with pytest.raises(ConfigError, match="crop_size"):
        load_config(FinetuneConfig, None, ["data.crop_size=100"])
    with pytest.raises(ConfigError, match="init"):
        load_config(FinetuneConfig, None, ["init=simclr:"])
    with pytest.raises(ConfigError, match="unknown_key|Key 'unknown_key'"):
        load_config(FinetuneConfig, None, ["model.unknown_key=1"])
    for path in ("configs/finetune/cpu.yaml", "configs/finetune/gpu_resnet50.yaml"):
        cfg = load_config(FinetuneConfig, REPO / path)
        assert cfg.model.output_stride == 16 and cfg.tracking.experiment


def test_config_key_names_a_simclr_start_by_its_weights_not_its_path(tmp_path):
    """A copied snapshot (another checkout) resumes the same run; other weights are another run."""
    import shutil

    from histoclr.seg.train import config_key
    from histoclr.ssl.model import build_encoder, save_backbone

    torch.manual_seed(0)
    first = save_backbone(tmp_path / "a" / "backbone.pt", build_encoder("resnet18"), "resnet18", {})
    copy = tmp_path / "b" / "moved.pt"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    other = save_backbone(tmp_path / "c" / "backbone.pt", build_encoder("resnet18"), "resnet18", {})

    def key(path):
        return config_key(load_config(FinetuneConfig, None, [f"init=simclr:{path}"]))

    assert key(first) == key(copy)
    assert key(first) != key(other)
    assert key(first) != config_key(load_config(FinetuneConfig, None, ["init=random"]))
