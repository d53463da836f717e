"""The docs record of a long pretraining run: snapshots, held-out checks from MLflow, log tail."""

from __future__ import annotations

import pytest
import yaml
from mlflow import MlflowClient

from histoclr.io import save_tagged, sha256_file
from histoclr.recipes.pretrain_record import holdout_table, log_tail, read_log, snapshots, write_record
from histoclr.ssl.model import build_encoder, save_backbone
from histoclr.ssl.trainer import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

CHECKS = {250: (0.062, 0.025, 60.1, 145.8), 1000: (0.182, 0.025, 37.5, 145.8)}


def _run_dir(tmp_path, uri):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    client = MlflowClient(uri)  # not the global tracking URI: other tests keep theirs
    run = client.create_run(client.create_experiment("pretrain-record"))
    for step, (t1, t1r, rank, rankr) in CHECKS.items():
        for name, value in {"holdout_top1": t1, "holdout_top1_random": t1r, "holdout_mean_rank": rank,
                            "holdout_mean_rank_random": rankr, "holdout_tiles": 256}.items():
            client.log_metric(run.info.run_id, name, value, step=step)
    client.log_metric(run.info.run_id, "loss", 1.7, step=1000)  # not a held-out check: not a row
    encoder = build_encoder("resnet18")
    for step in CHECKS:
        save_backbone(run_dir / "snapshots" / f"backbone_step{step:06d}.pt", encoder, "resnet18",
                      metadata={"step": step, "run_id": run.info.run_id, "git_commit": "abcdef1234567"})
    save_tagged(run_dir / "checkpoints" / "last.pt", CHECKPOINT_FORMAT, CHECKPOINT_VERSION, {"step": 1755, "epoch": 0})
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"train": {"max_steps": 2000}}))
    (run_dir / "log.txt").write_text("resume: x, starting at step 0 of 2000\npretrain: 1/2000 [1.50s/step]\r"
                                     "pretrain: 2/2000 [2.50s/step]\nresume: x, starting at step 1735 of 2000\n"
                                     "pretrain: 1740/2000 [9.00s/step]\n")
    return run_dir, run.info.run_id


def test_record_lists_snapshots_checks_and_state(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir, run_id = _run_dir(tmp_path, uri)
    assert list(holdout_table(run_id, uri)) == [250, 1000]

    readme = write_record(run_dir, tmp_path / "doc", tracking_uri=uri, note="Speed: measured.")
    text = readme.read_text()
    assert "(in progress)" in text and "step **1755** of 2000" in text and run_id in text
    assert "| 250 | 256 | 0.062 | 0.025 | 60.1 | 145.8 |" in text
    assert "| 1000 | 256 | 0.182 | 0.025 | 37.5 | 145.8 |" in text
    snap = run_dir / "snapshots" / "backbone_step001000.pt"
    assert f"backbone_step001000.pt` (commit abcdef1234, sha256 `{sha256_file(snap)}`)" in text
    assert text.rstrip().endswith("Speed: measured.")
    assert "median 2.50 s a step" in text and "resumed from a checkpoint at steps 1735 (" in text
    assert (tmp_path / "doc" / "holdout_vs_step.png").stat().st_size > 0
    assert (tmp_path / "doc" / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()


def test_log_tail_resolves_carriage_returns(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("start\npretrain: 1/2000 a\rpretrain: 2/2000 b\rpretrain: 3/2000 c\n")
    assert log_tail(read_log(log), lines=2) == "pretrain: 2/2000 b\npretrain: 3/2000 c\n"
    assert read_log(tmp_path / "missing.txt") == "" and log_tail("") == ""


def test_snapshots_read_metadata_without_the_weights(tmp_path, monkeypatch):
    import torch

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir, run_id = _run_dir(tmp_path, uri)
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k.get("mmap")) or real_load(*a, **k))
    snaps = snapshots(run_dir)
    assert [s.step for s in snaps] == [250, 1000] and {s.run_id for s in snaps} == {run_id}
    assert seen == [True, True]   # mapped, not read
    assert snaps[0].sha256 == sha256_file(run_dir / "snapshots" / "backbone_step000250.pt")


def test_run_summary_names_model_views_and_data(tmp_path):
    import json

    from histoclr.recipes.pretrain_record import run_summary

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"arch": "resnet18"}, "train": {"max_steps": 2000, "batch_size": 64}, "views": {"image_size": 96}}))
    assert run_summary(tmp_path) == "SimCLR resnet18, 2000 steps of batch 64, 96 px views."
    (tmp_path / "dense_manifest.json").write_text(json.dumps(
        {"recipe": {"crop_size": 120, "mpp": 0.25, "min_tissue": 0.5}, "train_tissue_mm2": 2.05,
         "sources": [{"role": "train"}] * 25 + [{"role": "holdout"}] * 3, "excluded": [{}] * 3}))
    text = run_summary(tmp_path)
    assert "120 px tissue crops at 0.25 µm/px" in text and "from 25 images and slides (2.05 mm²" in text
    assert "3 held out" in text and "3 validation images of the segmentation split excluded" in text
    assert run_summary(tmp_path / "missing") == ""


def test_a_folder_without_snapshots_is_one_line_and_overwrites_nothing(tmp_path):
    import pytest

    from histoclr.recipes.pretrain_record import main

    (tmp_path / "doc").mkdir()
    (tmp_path / "doc" / "README.md").write_text("the good record")
    with pytest.raises(SystemExit) as e:
        main(["--run-dir", str(tmp_path / "runs" / "typo"), "--out", str(tmp_path / "doc"), "--section", ""])
    assert str(e.value).startswith(f"error: {tmp_path / 'runs' / 'typo'}: no backbone snapshots")
    assert "\n" not in str(e.value)
    assert (tmp_path / "doc" / "README.md").read_text() == "the good record"


def test_a_longer_run_beside_the_shipped_one_says_how_it_resumes_and_refreshes(tmp_path):
    from histoclr.recipes.pretrain_record import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir, _ = _run_dir(tmp_path, uri)
    resume = "bash pipelines/pretrain_long.sh out_dir=runs/x train.max_steps=4000"
    main(["--run-dir", str(run_dir), "--out", str(tmp_path / "doc"), "--tracking-uri", uri, "--section", "",
          "--note", "a long paragraph", "--resume-command", resume])
    text = (tmp_path / "doc" / "README.md").read_text()
    assert f"from step 0): `{resume}`." in text
    assert (f"Refresh this record: `python pipelines/pretrain_record.py --run-dir {run_dir} --out {tmp_path / 'doc'} "
            f"--tracking-uri {uri} --section '' --resume-command '{resume}' --note '...' (the paragraph below)`.") in text
    assert text.rstrip().endswith("a long paragraph")
    before = text
    for args in (["--out", str(tmp_path / "other")], ["--section", ""]):   # the shipped record's out or section
        with pytest.raises(SystemExit, match=f"error: --run-dir {run_dir} is not the shipped run"):
            main(["--run-dir", str(run_dir), "--tracking-uri", uri, *args])
    assert (tmp_path / "doc" / "README.md").read_text() == before
