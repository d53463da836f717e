"""Dense sampling: crops only from tissue, at the requested mpp, never from an excluded image,
the same crops for the same seed, the same sequence (and weights) after a resume; snapshots for finetune-seg."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from histoclr.config.loader import load_config
from histoclr.config.pretrain import PretrainConfig
from histoclr.errors import InputFileError
from histoclr.pretrain.dense import DENSE_MANIFEST, build_dense
from histoclr.slides.reader import open_slide
from histoclr.slides.synthetic import write_pyramid_tiff

_spec = importlib.util.spec_from_file_location("synthetic_tiles", Path(__file__).with_name("synthetic_tiles.py"))
synthetic_tiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic_tiles)

TINY = ["model.arch=resnet18", "model.proj_hidden_dim=32", "model.proj_out_dim=16", "views.image_size=32",
        "train.batch_size=4", "train.num_workers=0", "train.precision=32", "train.device=cpu",
        "train.channels_last=false", "train.log_every=1", "optim.name=adamw", "optim.lr=0.001",
        "diagnostics.batch_size=8", "diagnostics.max_tiles=8", "diagnostics.projection=pca"]


def dense_cfg(root: Path, *overrides: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [
        "data.mode=dense", f"data.dense.root={root}", "data.dense.exclude_pairs=null",
        "data.holdout_fraction=0", *overrides])


def he_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8 H&E-like tissue (pink stroma, purple nuclei)."""
    return synthetic_tiles.he_tile(rng, size, tint=float(rng.random()))


@pytest.fixture
def images(tmp_path) -> Path:
    """Three 192 px TIFFs without resolution tags (a, b, c) and a pairs manifest with b in val."""
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        tifffile.imwrite(root / "imgs" / f"{name}.tif", he_image(rng, 192))
    (root / "pairs.csv").write_text(
        "# histoclr-seg-pairs v1\nimage_id,image,mask,mask_format,split,mpp\n"
        "a,imgs/a.tif,ann/a.xml,aperio_xml,train,0.25\nb,imgs/b.tif,ann/b.xml,aperio_xml,val,0.25\n")
    return root


def test_crops_come_only_from_tissue_at_the_requested_level(tmp_path):
    # 2048x1024 at 0.5 µm/px (3 levels) with tissue only in the left half; crops at 1.0 µm/px
    path = write_pyramid_tiff(tmp_path / "half.tif", 2048, 1024, mpp=0.5, tissue=[(0, 0, 1024, 1024)], levels=3)
    cfg = dense_cfg(tmp_path, f"data.dense.sources=[{path}]", "data.dense.mpp=1.0", "data.dense.crop_size=64",
                    "data.dense.min_tissue=1.0")
    data = build_dense(cfg)
    (src,) = data.train_sources
    assert (src.level, src.read_size, src.footprint0, src.mpp_source) == (1, 64, 128.0, "metadata")
    assert 0.4 < src.tissue_fraction < 0.6
    cell = 1 / src.scale[0]
    pos = [data.train.sample(k) for k in range(300)]
    xs = np.array([x for _, x, _ in pos])
    assert xs.max() + src.footprint0 <= 1024 + 2 * cell      # the whole crop lies in the tissue half
    assert xs.min() < 100 and xs.max() > 800                 # ... anywhere in it
    assert len(set(pos)) >= 295                              # random positions (~0.8M possible)
    with open_slide(path) as reader:
        for _, x, y in pos[:5]:
            crop = data.train.crops.crop(0, x, y)
            assert crop.shape == (64, 64, 3)
            np.testing.assert_array_equal(crop, reader.read_region((x, y), 1, (64, 64)))
            assert crop.mean() < 220                         # tissue texture, not white glass (~244)


def _stripe_period(crop: np.ndarray) -> float:
    profile = crop[..., 1].astype(np.float64).mean(0)
    spectrum = np.abs(np.fft.rfft(profile - profile.mean()))
    return len(profile) / int(np.argmax(spectrum))


def test_crops_are_read_at_the_requested_mpp(tmp_path):
    # vertical stripes every 16 px = 4 µm at an assumed 0.25 µm/px (no resolution tags)
    img = np.empty((256, 256, 3), np.uint8)
    img[:] = (230, 150, 200)
    img[:, (np.arange(256) // 8) % 2 == 1] = (100, 50, 150)
    tifffile.imwrite(tmp_path / "stripes.tif", img)
    with pytest.raises(InputFileError, match=r"stripes.tif: no resolution metadata.*data.dense.assume_mpp"):
        build_dense(dense_cfg(tmp_path, "data.dense.sources=[stripes.tif]"))
    for mpp, period in ((0.25, 16), (0.5, 8)):
        cfg = dense_cfg(tmp_path, "data.dense.sources=[stripes.tif]", "data.dense.assume_mpp=0.25",
                        f"data.dense.mpp={mpp}", "data.dense.crop_size=64")
        data = build_dense(cfg)
        assert data.train_sources[0].read_size == round(64 * mpp / 0.25)
        assert data.manifest["sources"][0]["base_mpp"] == 0.25
        for k in range(3):
            assert _stripe_period(data.train.crops.crop(*data.train.sample(k))) == pytest.approx(period)


def test_excluded_images_never_enter(images):
    cfg = dense_cfg(images, "data.dense.sources=[imgs]", "data.dense.assume_mpp=0.25", "data.dense.crop_size=64",
                    f"data.dense.exclude_pairs={images / 'pairs.csv'}", "data.holdout_fraction=0.5")
    data = build_dense(cfg)
    used = {s.source_id for s in data.train_sources + data.holdout_sources}
    assert used == {"a", "c"} and len(data.holdout_sources) == 1
    assert [x["source_id"] for x in data.excluded] == ["b"] and "split=val" in data.excluded[0]["reason"]
    seen = {data.train.crops.sources[data.train.sample(k)[0]].source_id for k in range(200)}
    assert seen == {s.source_id for s in data.train_sources}
    assert set(data.holdout.slide_ids) == {data.holdout_sources[0].source_id}
    roles = {s["source_id"]: s["role"] for s in data.manifest["sources"]}
    assert "b" not in roles and sorted(roles.values()) == ["holdout", "train"]
    # the explicit list works too, and nothing left to train on is an error
    data = build_dense(dense_cfg(images, "data.dense.sources=[imgs]", "data.dense.assume_mpp=0.25",
                                 "data.dense.crop_size=64", "data.dense.exclude=[a,c]"))
    assert [s.source_id for s in data.train_sources] == ["b"]


def test_same_seed_same_crops(images):
    args = ["data.dense.sources=[imgs]", "data.dense.assume_mpp=0.25", "data.dense.crop_size=64"]
    a, b = build_dense(dense_cfg(images, *args)), build_dense(dense_cfg(images, *args))
    other = build_dense(dense_cfg(images, *args, "train.seed=1"))
    ka = [a.train.sample(k) for k in range(50)]
    assert ka == [b.train.sample(k) for k in range(50)]
    assert ka != [other.train.sample(k) for k in range(50)]
    np.testing.assert_array_equal(a.train[7], b.train[7])
    assert a.manifest_sha256 == b.manifest_sha256 != other.manifest_sha256


class Recorder:
    """The run's views, recording a hash of every crop they are given (the crops a run sees)."""

    def __init__(self, views, stop_after: int | None = None):
        self.views = views              # found by the trainer's seeding (``.views``)
        self.seen: list[str] = []
        self.stop_after = stop_after

    def __call__(self, img: np.ndarray):
        if self.stop_after is not None and len(self.seen) == self.stop_after:
            raise KeyboardInterrupt      # the run is killed while loading a batch
        self.seen.append(hashlib.sha1(img.tobytes()).hexdigest())
        return self.views(img)


@pytest.mark.slow   # three / one tiny SimCLR runs: ~10-30 s idle, minutes on a loaded 2-core machine
def test_resumed_run_continues_the_same_crops_to_the_same_weights(images, tmp_path):
    import torch

    from histoclr.pretrain.run import prepare_data, pretrain

    def run(out: str, resume=None, stop_after=None) -> list[str]:
        cfg = dense_cfg(images, *TINY, "data.dense.sources=[imgs]", "data.dense.assume_mpp=0.25",
                        "data.dense.crop_size=48", "data.dense.crops_per_epoch=8", "train.max_steps=4",
                        "train.checkpoint_every=2", "tracking.enabled=false", "diagnostics.enabled=false",
                        f"out_dir={tmp_path / out}")
        data = prepare_data(cfg)
        rec = Recorder(data.views, stop_after)
        data.train.transform = rec
        try:
            pretrain(cfg, resume=resume, data=data)
        except KeyboardInterrupt:
            pass
        return rec.seen

    full = run("full")
    assert len(full) == 16 and len(set(full)) == 16       # 2 epochs of 8: new crops in epoch 2
    first = run("cut", stop_after=9)                     # killed loading the 3rd batch
    rest = run("cut", resume="auto")
    assert first[:8] == full[:8] and rest == full[8:]
    # and it ends where the uninterrupted run ends: the same weights, bit for bit (views, optimiser,
    # schedule and RNG states all continue from the checkpoint)
    from histoclr.ssl.model import load_backbone

    a, b = (load_backbone(tmp_path / out / "backbone.pt").state_dict for out in ("full", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((tmp_path / "cut" / DENSE_MANIFEST).read_text())
    assert manifest["recipe"]["crops_per_epoch"] == 8 and manifest["recipe"]["seed"] == 0


@pytest.mark.slow   # three / one tiny SimCLR runs: ~10-30 s idle, minutes on a loaded 2-core machine
def test_snapshots_load_strictly_into_the_seg_model_and_name_step_and_data(images, tmp_path):
    import mlflow

    from histoclr.io import sha256_file
    from histoclr.pretrain.run import pretrain
    from histoclr.seg.model import build_seg_model, init_encoder
    from histoclr.ssl.model import load_backbone
    from histoclr.ssl.trainer import load_checkpoint

    out = tmp_path / "run"
    cfg = dense_cfg(images, *TINY, "data.dense.sources=[imgs]", "data.dense.assume_mpp=0.25",
                    "data.dense.crop_size=48", f"data.dense.exclude_pairs={images / 'pairs.csv'}",
                    "data.holdout_fraction=0.5", "data.dense.crops_per_epoch=64", "train.max_steps=2", "snapshots.steps=[1,5]",
                    "tracking.experiment=dense-test", f"out_dir={out}")
    result = pretrain(cfg)
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == ["backbone_step000001.pt", "backbone_step000002.pt"]   # step 5 > max_steps: never
    for step in (1, 2):
        path = out / "snapshots" / f"backbone_step{step:06d}.pt"
        info = init_encoder(build_seg_model("resnet18"), f"simclr:{path}")     # strict load
        assert info["pretrain_run_id"] == result.run_id
        meta = load_backbone(path).metadata
        assert meta["step"] == step and meta["data"]["mode"] == "dense"
        assert meta["git_commit"] == load_checkpoint(out / "checkpoints" / "last.pt")["git_commit"]   # one commit a run
        assert meta["data"]["manifest_sha256"] == sha256_file(out / DENSE_MANIFEST)
        assert meta["data"]["excluded"] == ["b"] and "b" not in meta["data"]["train_sources"]
    client = mlflow.tracking.MlflowClient()
    top1 = client.get_metric_history(result.run_id, "holdout_top1")
    assert sorted(m.step for m in top1) == [1, 2]                          # checks at each snapshot
    assert (out / "diagnostics" / "step000001" / "embedding_map.png").read_bytes()[:4] == b"\x89PNG"
    arts = {a.path for a in client.list_artifacts(result.run_id)}
    assert DENSE_MANIFEST in arts and "snapshots" in arts


def test_real_data_excludes_the_seg_val_images(shared_data):
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(PretrainConfig, repo / "configs" / "pretrain" / "cpu.yaml", [
        f"data.dense.root={shared_data}", "data.dense.sources=[monuseg2018/labeled/images]",
        f"data.dense.exclude_pairs={repo / 'data_manifests' / 'monuseg2018_seg_pairs.csv'}"])
    data = build_dense(cfg)
    val = {"TCGA-21-5784-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1"}
    assert {x["source_id"] for x in data.excluded} == val
    used = {s.source_id for s in data.train_sources + data.holdout_sources}
    assert len(used) == 10 and not used & val
    src = data.train_sources[0]
    assert (src.base_mpp, src.mpp_source, src.level, src.read_size) == (0.2527, "assumed", 0, 119)
    crop = data.train.crops.crop(*data.train.sample(0))
    assert crop.shape == (120, 120, 3) and crop.dtype == np.uint8
