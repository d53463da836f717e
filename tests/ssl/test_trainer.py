"""SimCLRTrainer on a tiny ResNet-18 at 16 px: exact resume, learning, NaN abort, checkpoint,
backbone file, MLflow logging. Real albumentations views through MultiViewTransform."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import Dataset

from histoclr.config.loader import config_to_dict
from histoclr.config.ssl import (
    ModelConfig,
    OptimConfig,
    SSLConfig,
    TrackingConfig,
    TrainConfig,
    ViewsConfig,
)
from histoclr.errors import HistoclrError, InputFileError
from histoclr.ssl.augment import MultiViewTransform, build_views
from histoclr.ssl.model import load_backbone, load_state_dict_strict
from histoclr.ssl.trainer import EpochSampler, SimCLRTrainer, load_checkpoint, split_views

SIZE = 16


class BlockImages(Dataset):
    """``n`` distinct 20x20 images of random 4x4 colour blocks -> two 16 px views each."""

    def __init__(self, n: int, fail_after: int | None = None, nan: bool = False, labelled: bool = False,
                 **view_params):
        rng = np.random.default_rng(123)
        self.images = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8).repeat(5, 1).repeat(5, 2)
        self.transform = MultiViewTransform(build_views("natural", image_size=SIZE, **view_params), 2)
        self.fail_after, self.nan, self.labelled, self.served = fail_after, nan, labelled, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        self.served += 1
        if self.fail_after is not None and self.served > self.fail_after:
            raise RuntimeError("simulated crash")
        views = self.transform(self.images[i])
        if self.nan:
            views = [torch.full_like(v, float("nan")) for v in views]
        return (views, i) if self.labelled else views


def tiny_cfg(out: Path, **train) -> SSLConfig:
    t = {"max_steps": 4, "batch_size": 4, "num_workers": 0, "precision": "32", "channels_last": False,
         "seed": 7, "checkpoint_every": 0, "log_every": 1, "device": "cpu"}
    t.update(train)
    return SSLConfig(model=ModelConfig("resnet18", 32, 16, 2),
                     optim=OptimConfig(name="lars", lr=1.0, warmup_steps=2),
                     views=ViewsConfig(recipe="natural", image_size=SIZE),
                     train=TrainConfig(**t), tracking=TrackingConfig(experiment="trainer-test"),
                     out_dir=str(out))


def _client() -> MlflowClient:
    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def test_resume_after_crash_is_bit_identical_to_one_go(tmp_path):
    # 12 images / batch 4 = 3 steps per epoch: the resume at step 2 starts mid-epoch.
    one_go = SimCLRTrainer(tiny_cfg(tmp_path / "a"), BlockImages(12)).fit()

    crashing = SimCLRTrainer(tiny_cfg(tmp_path / "b", checkpoint_every=2), BlockImages(12, fail_after=8))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit()
    assert load_checkpoint(tmp_path / "b/checkpoints/last.pt")["step"] == 2
    resumed = SimCLRTrainer(tiny_cfg(tmp_path / "b", checkpoint_every=2), BlockImages(12)).fit(resume="auto")

    a, b = one_go.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    oa, ob = (load_checkpoint(r.checkpoint_path) for r in (one_go, resumed))
    assert oa["step"] == ob["step"] == 4 and oa["scheduler"] == ob["scheduler"]
    for sa, sb in zip(oa["optimizer"]["state"].values(), ob["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    # the crashed MLflow run was continued (same run id), its loss curve is the one-go curve
    assert resumed.run_id == crashing.run_id != one_go.run_id
    run = _client().get_run(resumed.run_id)
    assert run.info.status == "FINISHED"
    hist = {r: [(m.step, m.value) for m in _client().get_metric_history(r, "loss")]
            for r in (one_go.run_id, resumed.run_id)}
    assert hist[resumed.run_id] == hist[one_go.run_id] and len(hist[one_go.run_id]) == 4


def test_tiny_model_learns_a_handful_of_images(tmp_path):
    cfg = tiny_cfg(tmp_path, max_steps=12, log_every=1)
    cfg.optim = OptimConfig(name="adamw", lr=3e-3, lr_scaling="none", weight_decay=0.0, warmup_steps=2)
    data = BlockImages(4, scale=(0.5, 1.0), jitter_p=0.0, blur_p=0.0, grayscale_p=0.0)
    result = SimCLRTrainer(cfg, data).fit()
    loss = [m.value for m in _client().get_metric_history(result.run_id, "loss")]
    top1 = [m.value for m in _client().get_metric_history(result.run_id, "top1")]
    assert len(loss) == 12
    # chance: loss ~ log(7) = 1.95 and top-1 ~ 1/7 for 4 images (8 views)
    assert np.mean(loss[-3:]) < np.mean(loss[:3]) - 0.5, loss
    assert np.mean(top1[-3:]) > np.mean(top1[:3]) + 0.4, top1


def test_nan_loss_aborts_naming_the_step(tmp_path):
    trainer = SimCLRTrainer(tiny_cfg(tmp_path), BlockImages(8, nan=True))
    with pytest.raises(HistoclrError, match=r"diverged at step 1: loss is nan"):
        trainer.fit()
    assert _client().get_run(trainer.run_id).info.status == "FAILED"
    assert not (tmp_path / "backbone.pt").exists()


def test_checkpoint_backbone_and_mlflow_contents(tmp_path, monkeypatch):
    import histoclr.ssl.trainer as trainer_mod

    calls = []

    def on_end(trainer, mlflow_mod):
        calls.append(trainer.step)
        return {"probe_acc": 0.5}

    preview = [np.full((24, 24, 3), 200, np.uint8), np.zeros((24, 24, 3), np.uint8)]
    cfg = tiny_cfg(tmp_path / "run", max_steps=3, log_every=2)
    trainer = SimCLRTrainer(cfg, BlockImages(8, labelled=True), extra_params={"data.n_images": 8},
                            extra_tags={"dataset": "blocks"}, on_end=on_end, preview_images=preview)
    monkeypatch.setattr(trainer_mod, "git_commit", lambda: "checkout-moved-on")   # a commit made while it runs
    result = trainer.fit()
    # checkpoint: every state, the config and the commit of the code the process started with
    ckpt = load_checkpoint(result.checkpoint_path)
    assert result.checkpoint_path == tmp_path / "run/checkpoints/last.pt"
    assert {"model", "optimizer", "scheduler", "scaler", "step", "epoch", "sampler", "rng", "config",
            "git_commit", "run_id"} <= set(ckpt)
    assert ckpt["step"] == 3 and ckpt["epoch"] == 1 and ckpt["sampler"]["batch_in_epoch"] == 1
    assert ckpt["config"] == config_to_dict(cfg) and ckpt["run_id"] == result.run_id
    assert ckpt["git_commit"] == trainer.git_commit != "checkout-moved-on"
    assert set(ckpt["rng"][0]) >= {"torch", "numpy", "python"}
    assert ckpt["scheduler"]["last_epoch"] == 3
    # backbone: strict load into torchvision's resnet18 (minus fc) and into an smp encoder
    import segmentation_models_pytorch as smp
    import torchvision

    bb = load_backbone(result.backbone_path)
    assert bb.arch == "resnet18" and bb.metadata["step"] == 3 and bb.metadata["run_id"] == result.run_id
    tv = torchvision.models.resnet18()
    tv.fc = torch.nn.Identity()
    load_state_dict_strict(tv, bb.state_dict, "backbone")
    load_state_dict_strict(smp.encoders.get_encoder("resnet18", weights=None), bb.state_dict, "backbone")
    assert torch.equal(tv.conv1.weight, result.model.encoder.conv1.weight)
    # MLflow: params, tags, per-step metrics, on_end metric, artifacts
    run = _client().get_run(result.run_id)
    assert run.data.params["model.arch"] == "resnet18" and run.data.params["data.n_images"] == "8"
    assert run.data.params["optim.lr"] == "1.0" and run.data.params["global_batch"] == "4"
    assert run.data.tags["dataset"] == "blocks" and run.data.tags["git_commit"]
    assert [m.step for m in _client().get_metric_history(result.run_id, "loss")] == [2, 3]
    assert {"loss", "top1", "lr", "images_per_s", "probe_acc", "final_loss"} <= set(run.data.metrics)
    assert calls == [3] and result.metrics["probe_acc"] == 0.5
    arts = {f.path for f in _client().list_artifacts(result.run_id)}
    assert {"backbone.pt", "config.yaml", "views_preview.png", "checkpoints"} <= arts
    assert [f.path for f in _client().list_artifacts(result.run_id, "checkpoints")] == ["checkpoints/last.pt"]
    assert (tmp_path / "run/views_preview.png").stat().st_size > 1000


def test_resume_refuses_a_different_batch_size(tmp_path):
    SimCLRTrainer(tiny_cfg(tmp_path, max_steps=1), BlockImages(8)).fit()
    with pytest.raises(InputFileError, match="exact resume needs the same data order"):
        SimCLRTrainer(tiny_cfg(tmp_path, max_steps=2, batch_size=2), BlockImages(8)).fit(resume="auto")


def test_too_small_dataset_and_missing_checkpoint_are_clear_errors(tmp_path):
    with pytest.raises(HistoclrError, match="has 3 images, fewer than one global batch"):
        SimCLRTrainer(tiny_cfg(tmp_path), BlockImages(3)).fit()
    with pytest.raises(InputFileError, match="checkpoint not found"):
        SimCLRTrainer(tiny_cfg(tmp_path), BlockImages(8)).fit(resume=tmp_path / "nope.pt")


def test_sampler_shards_match_the_single_process_batches():
    data = list(range(10))
    single = list(EpochSampler(data, 1, 0, seed=3, batch_size=4))
    shards = [list(EpochSampler(data, 2, r, seed=3, batch_size=2)) for r in range(2)]
    for step in range(2):
        union = shards[0][2 * step:2 * step + 2] + shards[1][2 * step:2 * step + 2]
        assert sorted(union) == sorted(single[4 * step:4 * step + 4])    # same items, same seeds
    s = EpochSampler(data, 1, 0, seed=3, batch_size=4)
    s.set_epoch(0, start_batch=1)
    assert list(s) == single[4:] and len(s) == 6
    s.set_epoch(1)
    assert [i for i, _ in s] != [i for i, _ in single]


def test_split_views_accepts_both_item_layouts():
    v = [torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)]
    assert split_views(v) == v
    assert split_views([v, torch.tensor([0, 1])]) == v
    with pytest.raises(ValueError, match="list of view tensors"):
        split_views({"x": 1})


def test_per_item_seed_gives_the_streams_manual_seed_gives():
    """SeededDataset seeds torch's CPU generator only (cheap), with the same stream as torch.manual_seed."""
    import random

    from histoclr.ssl.trainer import SeededDataset

    class Draws(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return torch.rand(3), np.random.rand(), random.random()

    seeded = SeededDataset(Draws())
    got = seeded[(0, 123)]
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    want = torch.rand(3), np.random.rand(), random.random()
    assert torch.equal(got[0], want[0]) and got[1:] == want[1:]
    assert not torch.equal(seeded[(0, 124)][0], got[0])


def test_uint8_views_train_as_the_float_views_do(tmp_path):
    """A recipe with normalize=False hands uint8 views to the trainer, which normalises them on its
    device: the same loss curve as the recipe's own normalisation (to float32 rounding)."""
    runs = {}
    for name, normalize in (("float", True), ("uint8", False)):
        cfg = tiny_cfg(tmp_path / name, max_steps=3)
        data = BlockImages(8, normalize=normalize)
        assert data.transform(data.images[0])[0].dtype == (torch.float32 if normalize else torch.uint8)
        runs[name] = SimCLRTrainer(cfg, data).fit().run_id
    losses = {k: [m.value for m in _client().get_metric_history(r, "loss")] for k, r in runs.items()}
    assert len(losses["uint8"]) == 3
    np.testing.assert_allclose(losses["uint8"], losses["float"], rtol=0, atol=1e-4)
