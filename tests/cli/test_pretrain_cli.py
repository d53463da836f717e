"""`histoclr pretrain` end to end on a tiny synthetic tile manifest (resnet18 at 32 px, CPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from histoclr.cli import cli

_spec = importlib.util.spec_from_file_location(
    "synthetic_tiles", Path(__file__).resolve().parents[1] / "pretrain" / "synthetic_tiles.py")
synthetic_tiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic_tiles)

TINY = ["model.arch=resnet18", "model.proj_hidden_dim=32", "model.proj_out_dim=16", "views.image_size=32",
        "train.batch_size=4", "train.num_workers=0", "train.precision=32", "train.device=cpu",
        "train.channels_last=false", "train.log_every=1", "optim.name=adamw", "optim.lr=0.001",
        "data.holdout_fraction=0.34", "diagnostics.batch_size=8", "tracking.experiment=pretrain-test",
        "out_dir=run"]


def run(*args) -> click.testing.Result:  # noqa: F821
    return CliRunner().invoke(cli, ["pretrain", *map(str, args)])



@pytest.fixture
def manifest(tmp_path) -> Path:
    return synthetic_tiles.write_manifest(tmp_path / "tiles", {"sa": 4, "sb": 4, "sc": 4}, size=48)


@pytest.mark.slow
def test_pretrain_writes_backbone_logs_checks_and_resumes(manifest, tmp_path):
    import mlflow
    import torchvision

    from histoclr.ssl.model import load_backbone
    from histoclr.ssl.trainer import load_checkpoint

    r = run(*TINY, f"data.manifests=[{manifest}]", "train.max_steps=2")
    assert r.exit_code == 0, r.output
    assert "8 training tiles from 2 slide(s); 4 held-out tiles from 1 slide(s) (sb)" in r.output
    assert "held-out positive-pair ranking (4 tiles, 1 slides)" in r.output

    # the backbone loads strictly into a torchvision ResNet without fc
    bb = load_backbone(tmp_path / "run" / "backbone.pt")
    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    net.load_state_dict(bb.state_dict, strict=True)
    assert bb.arch == "resnet18" and bb.metadata["step"] == 2

    client = mlflow.tracking.MlflowClient()
    (run1,) = client.search_runs([client.get_experiment_by_name("pretrain-test").experiment_id])
    assert run1.data.params["model.arch"] == "resnet18"
    assert run1.data.params["data.train_tiles"] == "8"
    assert run1.data.params["data.holdout_slide_ids"] == "sb"
    m = run1.data.metrics
    for key in ("holdout_top1", "holdout_top5", "holdout_mean_rank", "holdout_top1_random",
                "holdout_mean_rank_random", "holdout_nn_same_slide"):
        assert key in m, key
    assert 0 <= m["holdout_top1"] <= 1 and 1 <= m["holdout_mean_rank"] <= 7
    assert m["holdout_tiles"] == 4 and m["bad_tiles"] == 0
    arts = {a.path for a in client.list_artifacts(run1.info.run_id, "diagnostics")}
    assert {"diagnostics/embedding_map.png", "diagnostics/neighbours.png",
            "diagnostics/loss_curve.png", "diagnostics/diagnostics.json"} <= arts
    for name in ("embedding_map.png", "neighbours.png", "loss_curve.png"):
        assert (tmp_path / "run" / "diagnostics" / name).read_bytes()[:4] == b"\x89PNG"

    # resume: continues the same run from step 2 to step 4 (more steps: a deliberate config change)
    r = run(*TINY, f"data.manifests=[{manifest}]", "--resume", "auto", "train.max_steps=4")
    assert r.exit_code == 2 and "train.max_steps 2 -> 4" in r.output
    r = run(*TINY, f"data.manifests=[{manifest}]", "--resume", "auto", "--resume-with-new-config",
            "train.max_steps=4")
    assert r.exit_code == 0, r.output
    assert "starting at step 2 of 4" in r.output
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4
    assert load_backbone(tmp_path / "run" / "backbone.pt").metadata["step"] == 4
    (run2,) = client.search_runs([client.get_experiment_by_name("pretrain-test").experiment_id])
    assert run2.info.run_id == run1.info.run_id
    assert [h.step for h in client.get_metric_history(run2.info.run_id, "loss")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_missing_and_corrupt_tiles_are_reported_and_skipped(manifest, tmp_path):
    import mlflow

    missing = manifest.parent / "tiles" / "sa" / "0001.png"
    missing.unlink()
    corrupt = manifest.parent / "tiles" / "sc" / "0002.png"
    corrupt.write_bytes(b"\x89PNG not really")
    r = run(*TINY, f"data.manifests=[{manifest}]", "train.max_steps=2")   # 2 steps x 4 = all 8 tiles
    assert r.exit_code == 0, r.output
    assert f"warning: {missing}: cannot read tile (file not found); skipped" in r.output
    assert f"warning: {corrupt}: cannot read tile (" in r.output
    assert "2 unreadable tile(s) skipped" in r.output
    listed = (tmp_path / "run" / "diagnostics" / "bad_tiles.txt").read_text()
    assert str(missing) in listed and str(corrupt) in listed
    client = mlflow.tracking.MlflowClient()
    (run1,) = client.search_runs([client.get_experiment_by_name("pretrain-test").experiment_id])
    assert run1.data.metrics["bad_tiles"] == 2


@pytest.mark.parametrize("first_line,header,expected", [
    ("# histoclr-tiles v2", None, "manifest format version 2 is not supported"),
    ("# histoclr-tiles v1", "slide_id,x,y,tile_path", "missing column(s): slide_path, level"),
])
def test_bad_manifest_is_one_line_error_before_training(manifest, tmp_path, first_line, header, expected):
    lines = manifest.read_text().splitlines()
    lines[0] = first_line
    if header is not None:
        lines = [lines[0], header] + ["sa,0,0,tiles/sa/0000.png"]
    manifest.write_text("\n".join(lines) + "\n")
    r = run(*TINY, f"data.manifests=[{manifest}]", "train.max_steps=2")
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0, r.output
    assert r.output.startswith(f"error: {manifest}: ") and expected in r.output
    assert not (tmp_path / "run").exists()


def test_config_errors_are_one_line(tmp_path):
    r = run(*TINY, "train.max_steps=2")
    assert r.exit_code == 2 and "data.manifests is empty" in r.output
    r = run(*TINY, "data.manifests=[x]", "views.params={bogus: 1}")
    assert r.exit_code == 2 and "views.params: unknown parameter(s) bogus" in r.output
