"""The STL-10 recipe end to end on a tiny STL-10 in the official binary layout (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histoclr.recipes import stl10 as recipe
from histoclr.stl10 import write_stl10_split

REPO = Path(__file__).resolve().parents[2]
TINY = ["pretrain.model.proj_hidden_dim=32", "pretrain.model.proj_out_dim=16", "pretrain.views.image_size=32",
        "pretrain.train.batch_size=4", "pretrain.train.max_steps=2", "pretrain.train.num_workers=0",
        "pretrain.train.precision=32", "pretrain.train.device=cpu", "pretrain.train.checkpoint_every=0",
        "pretrain.train.log_every=1", "data.test_per_class=null", "eval.budgets=[1,2]", "eval.batch_size=16",
        "eval.device=cpu", "eval.max_iter=20", "eval.imagenet_download=false", "experiment=stl10-test"]



def _tiny_stl10(root: Path) -> None:
    rng = np.random.default_rng(0)
    write_stl10_split(root, "unlabeled", rng.integers(0, 256, (8, 96, 96, 3), dtype=np.uint8))
    for split, n in (("train", 3), ("test", 2)):
        labels = np.repeat(np.arange(10), n)
        images = rng.integers(0, 64, (len(labels), 96, 96, 3), dtype=np.uint8) + (labels * 19)[:, None, None, None]
        write_stl10_split(root, split, images.astype(np.uint8), labels)


def test_recipe_logs_one_run_per_arm_and_reuses_cached_features(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from histoclr.config import load_config
    from histoclr.config.stl10 import STL10Config

    _tiny_stl10(tmp_path / "stl10")
    rc = recipe.main(["--config", str(REPO / "configs/stl10/cpu.yaml"), "--data-root", str(tmp_path / "stl10"),
                      *TINY, "out_dir=out"])
    assert rc == 0, capsys.readouterr().err

    client = MlflowClient()
    exp = client.get_experiment_by_name("stl10-test")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("histoclr.kind") == "stl10-summary")
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == ["stl10-cpu/imagenet", "stl10-cpu/pretrain", "stl10-cpu/random", "stl10-cpu/simclr"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for arm in ("random", "simclr"):
        run = children[f"stl10-cpu/{arm}"]
        assert run.data.params["arm"] == arm and run.data.params["arch"] == "resnet18"
        assert run.data.params["budgets"] == "[1, 2]"
        assert set(run.data.metrics) >= {"test_acc_1", "test_acc_2"}
        assert all(0.0 <= run.data.metrics[f"test_acc_{b}"] <= 1.0 for b in (1, 2))
        assert run.data.tags["features_cached"] == "false"
    assert children["stl10-cpu/simclr"].data.params["backbone_source"].endswith("backbone.pt")
    assert children["stl10-cpu/simclr"].data.params["pretrain_run_id"] == children["stl10-cpu/pretrain"].info.run_id
    skipped = children["stl10-cpu/imagenet"]
    assert skipped.data.tags["skipped"] == "true" and "imagenet_download=false" in skipped.data.tags["skip_reason"]
    assert not skipped.data.metrics
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"linear_eval.png", "linear_eval.json"}
    assert (tmp_path / "out" / "linear_eval.png").stat().st_size > 10_000

    # Second run reusing the backbone: same encoders -> the cached features are loaded, not recomputed.
    caches = sorted((tmp_path / "out" / "features").glob("*.npz"))
    assert len(caches) == 4  # 2 arms x (train, test)
    mtimes = [p.stat().st_mtime_ns for p in caches]
    backbone = tmp_path / "out" / "pretrain" / "backbone.pt"
    cfg = load_config(STL10Config, REPO / "configs/stl10/cpu.yaml",
                      [*TINY, "out_dir=out", f"data.root={tmp_path / 'stl10'}", f"pretrain.backbone={backbone}",
                       "run_name=again", f"eval.imagenet_weights={backbone}"])  # any local weights file
    res = recipe.run(cfg, echo=lambda s: None)
    assert [p.stat().st_mtime_ns for p in caches] == mtimes
    again = {r.info.run_name: r for r in client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{res['parent_run_id']}'")}
    assert sorted(again) == ["again/imagenet", "again/random", "again/simclr"]  # no new pretraining
    assert again["again/random"].data.tags["features_cached"] == "true"
    assert again["again/simclr"].data.tags["features_cached"] == "true"
    assert again["again/imagenet"].data.tags["skipped"] == "false"
    assert again["again/imagenet"].data.params["backbone_source"] == str(backbone)
    assert res["results"]["imagenet"] == res["results"]["simclr"] and not res["skipped"]
    del res["results"]["imagenet"]
    assert res["results"] == {arm: {b: children[f"stl10-cpu/{arm}"].data.metrics[f"test_acc_{b}"] for b in (1, 2)}
                              for arm in ("random", "simclr")}


def test_offline_without_data_is_one_line_error(tmp_path, capsys, monkeypatch):
    from torchvision.datasets import STL10

    monkeypatch.setattr(STL10, "url", "http://127.0.0.1:9/stl10_binary.tar.gz")  # nothing listens there
    rc = recipe.main(["--config", str(REPO / "configs/stl10/cpu.yaml"), "--data-root", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: STL-10 not found") and "--data-root" in err[0]


def test_budget_larger_than_the_train_split_is_refused(tmp_path):
    from histoclr.config import load_config
    from histoclr.config.stl10 import STL10Config
    from histoclr.errors import HistoclrError

    _tiny_stl10(tmp_path / "stl10")
    cfg = load_config(STL10Config, REPO / "configs/stl10/cpu.yaml",
                      [*TINY, f"data.root={tmp_path / 'stl10'}", "eval.budgets=[1,5]"])
    with pytest.raises(HistoclrError, match="5 labels per class asked, the train split has 3"):
        recipe.run(cfg)


@pytest.mark.parametrize("override, message", [
    ("eval.arms=[random,supervised]", "eval.arms: 'supervised' is not one of"),
    ("eval.budgets=[0]", "eval.budgets must be labels per class >= 1"),
    ("pretrain.train.batch_size=1", "pretrain.train.batch_size must be >= 2"),
    ("data.test_per_class=0", "data.test_per_class must be >= 1"),
])
def test_configs_load_and_bad_values_are_named(override, message):
    from histoclr.config import load_config
    from histoclr.config.stl10 import STL10Config
    from histoclr.errors import ConfigError

    paper = load_config(STL10Config, REPO / "configs/stl10/paper.yaml")
    assert (paper.pretrain.model.arch, paper.pretrain.views.image_size, paper.pretrain.train.batch_size) == \
        ("resnet18", 96, 256)
    assert paper.eval.budgets == [10, 20, 50, 100, 200, 500]
    with pytest.raises(ConfigError, match=message):
        load_config(STL10Config, REPO / "configs/stl10/cpu.yaml", [override])
