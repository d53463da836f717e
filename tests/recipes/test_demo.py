"""The pipeline's demo mode: `make run` without a data root runs every stage on the synthetic demo
root, says so at the start and the end, tags every MLflow run demo=true and heads its report."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from histoclr.demo import DEMO_HEADER
from histoclr.recipes.demo import banner, demo_wanted
from histoclr.recipes.pipeline import main
from histoclr.tracking import RUN_TAGS_ENV, env_tags, resolve_tracking_uri

REPO = Path(__file__).resolve().parents[2]
BANNER = "running the built-in demo on synthetic data; for your slides: make run DATA=/path"


def test_demo_wanted_and_banner(tmp_path, monkeypatch):
    assert demo_wanted("demo") and demo_wanted(str(tmp_path / "x"), if_missing=True)
    assert not demo_wanted(str(tmp_path / "x")) and not demo_wanted(str(tmp_path), if_missing=True)
    assert f"no data at ../shared/data: {BANNER}" in banner("../shared/data")
    assert f"DATA=demo: {BANNER}" in banner("demo")
    monkeypatch.setenv(RUN_TAGS_ENV, "demo=true, team = a ,junk")
    assert env_tags() == {"demo": "true", "team": "a"}


def _tiny(src: str, dst: Path, **changes) -> str:
    """A copy of the demo config ``src`` with nested ``changes`` ("a.b": value)."""
    cfg = yaml.safe_load((REPO / src).read_text())
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    dst.write_text(yaml.safe_dump(cfg))
    return str(dst)


@pytest.mark.slow
def test_demo_pipeline_runs_every_stage_and_labels_its_output(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv(RUN_TAGS_ENV, raising=False)       # restored after the test
    monkeypatch.setenv("HISTOCLR_PROGRESS_INTERVAL", "30")
    pre = _tiny("configs/pretrain/demo.yaml", tmp_path / "pre.yaml", **{
        "train.max_steps": 2, "train.batch_size": 8, "train.checkpoint_every": 2, "views.image_size": 32,
        "data.dense.crop_size": 48, "diagnostics.max_tiles": 8, "diagnostics.batch_size": 8,
        "diagnostics.projection": "pca", "model.proj_hidden_dim": 32, "model.proj_out_dim": 16})
    fin = _tiny("configs/finetune/demo.yaml", tmp_path / "fin.yaml", **{
        "train.epochs": 1, "train.steps_per_epoch": 2, "train.batch_size": 2, "data.crop_size": 96,
        "train.overlays": 0, "train.threads": 1, "postprocess.tune": False, "model.decoder_channels": 32})
    abl = _tiny("configs/ablation/demo.yaml", tmp_path / "abl.yaml", finetune_config=fin,
                finetune_overrides=[], label_fractions=[1.0], classical_baseline=False)
    out = tmp_path / "run"
    main(["--demo-if-missing", f"data_root={tmp_path / 'no_data_here'}", f"out_dir={out}",
          f"pretrain_config={pre}", f"ablation_config={abl}", f"final_config={fin}", "workers=1",
          "tile_size=64"])
    said = capfd.readouterr().out
    assert said.count(f"no data at {tmp_path / 'no_data_here'}: {BANNER}") == 2      # start and end
    # every stage ran on the demo root
    assert (out / "data" / "pairs.csv").is_file() and (out / "tiles" / "tiles.csv").is_file()
    assert (out / "pretrain" / "backbone.pt").is_file() and (out / "final" / "best.pt").is_file()
    summary = (out / "report" / "summary.md").read_text()
    assert summary.startswith(DEMO_HEADER) and "synthetic" in summary and "| random |" in summary
    # every MLflow run of the demo carries the demo tag
    client = MlflowClient(resolve_tracking_uri())
    exp = client.get_experiment_by_name("histoclr-demo")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    names = {r.info.run_name for r in runs}
    assert {"final model", "demo"} <= names and len(runs) >= 6       # pretrain, sweep + 3 cells, final
    untagged = [r.info.run_name for r in runs if r.data.tags.get("demo") != "true"]
    assert not untagged, untagged
    assert any(r.data.tags.get("histoclr.final_model") == "true" for r in runs)
