"""`histoclr ablate` + `histoclr report` against a real MLflow tracking server (SQLite backend).

A tiny grid of real fine-tuning cells (ResNet-18 DeepLabV3, 64 px, 2 steps) on synthetic H&E-like
image/mask pairs: parent/child structure, run names, shared params and metrics, the offline ImageNet
arm recorded as skipped, a cell made to fail (a backbone of the wrong architecture) marked FAILED
while the others finish, the best cell registered in the Model Registry and loaded back by
``models:/`` and ``runs:/`` URIs (same prediction as its file), resume skipping finished cells (and
not registering again), and the report's table, plots and printed link.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from histoclr.ablation.report import build_report, collect_runs
from histoclr.ablation.sweep import CELL_TAG, METRIC_NAMES, PARAM_NAMES, run_sweep
from histoclr.config import load_config
from histoclr.config.ablation import AblationConfig
from histoclr.errors import HistoclrError
from histoclr.seg.synthetic import write_synthetic_pairs


@pytest.fixture
def tiny_sweep(tmp_path, mlflow_server):
    from histoclr.ssl.model import build_encoder, save_backbone

    pairs = write_synthetic_pairs(tmp_path / "data")
    good = save_backbone(tmp_path / "good.pt", build_encoder("resnet18"), "resnet18", {"run_id": "pre123"})
    wrong = save_backbone(tmp_path / "wrong.pt", build_encoder("resnet34"), "resnet34", {})
    ft = {"pairs": str(pairs), "data_root": str(tmp_path / "data"), "out_dir": str(tmp_path / "ft"),
          "model": {"encoder": "resnet18"},
          "data": {"mpp": None, "crop_size": 64},
          "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "overlays": 1, "val_batch_size": 2}}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(ft))
    sweep = {"experiment": "tiny-ablation", "sweep_name": "tiny", "finetune_config": str(tmp_path / "ft.yaml"),
             "inits": ["random", "imagenet", f"simclr:{good}", f"simclr:{wrong}"],
             "freezes": ["none", "layer1-2"], "label_fractions": [1.0], "seeds": [0],
             "out_dir": str(tmp_path / "ablation"), "classical_baseline": True, "register_as": "tiny-best"}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return load_config(AblationConfig, tmp_path / "sweep.yaml"), mlflow_server


def test_sweep_against_a_tracking_server(tiny_sweep, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    cfg, uri = tiny_sweep
    res = run_sweep(cfg, tracking_uri=uri, echo=lambda s: None)
    assert len(res.finished) == 4                      # random + good simclr, x 2 freezes
    assert len(res.skipped) == 2                       # imagenet offline, no weights file
    assert len(res.failed) == 2 and all("resnet34" in m or "resnet18" in m for _, m in res.failed)

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny-ablation")
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'")
    assert len(children) == 8
    by_status = {}
    for r in children:
        by_status.setdefault(r.info.status, []).append(r)
        assert CELL_TAG in r.data.tags
    assert len(by_status["FAILED"]) == 2
    assert all(r.data.tags.get("error") for r in by_status["FAILED"])
    skipped = [r for r in children if r.data.tags.get("skipped") == "true"]
    assert len(skipped) == 2 and all("imagenet" in r.data.tags["skip_reason"].lower() for r in skipped)
    ran = [r for r in by_status["FINISHED"] if r.data.tags.get("skipped") != "true"]
    assert len(ran) == 4
    for r in ran:  # the same param names and final metrics on every cell: the UI can chart them
        assert set(PARAM_NAMES) <= set(r.data.params), set(PARAM_NAMES) - set(r.data.params)
        assert set(METRIC_NAMES) <= set(r.data.metrics), set(METRIC_NAMES) - set(r.data.metrics)
        assert 0.0 <= r.data.metrics["best_val_dice"] <= 1.0
    assert {r.data.params["pretrain_run_id"] for r in ran} == {"none", "pre123"}
    for r in children:    # every child, skipped and failed ones too, has the compared params
        assert {"init", "freeze", "label_fraction", "num_labeled", "seed"} <= set(r.data.params), r.info.run_name
        assert r.data.params["label_fraction"] == "1.0" and r.data.params["num_labeled"] == "3"   # img1-3 (img0 validates)
    names = {r.info.run_name for r in children}
    assert {"init=random freeze=none labels=100% seed=0", "init=imagenet freeze=layer1-2 labels=100% seed=0",
            "init=simclr:good.pt freeze=layer1-2 labels=100% seed=0",
            "init=simclr:wrong.pt freeze=none labels=100% seed=0"} <= names and len(names) == 8
    parent = client.get_run(res.parent_run_id)
    assert parent.info.status == "FINISHED" and "classical_dice" in parent.data.metrics
    assert parent.info.run_name == "tiny"
    assert client.get_experiment_by_name("tiny-ablation").tags["mlflow.experimentKind"] == "custom_model_development"

    # the best cell by val_aji: logged as an MLflow model on its run and registered as version 1
    best = max(sorted(ran, key=lambda r: r.info.start_time), key=lambda r: r.data.metrics["val_aji"])  # ties: oldest
    assert res.registered == "models:/tiny-best/1" and res.register_error is None
    assert parent.data.tags["histoclr.best_run_id"] == best.info.run_id
    assert parent.data.tags["histoclr.registered_model"] == "models:/tiny-best/1"
    (version,) = client.search_model_versions("name = 'tiny-best'")
    assert version.run_id == best.info.run_id
    _registry_round_trip(best, tmp_path, uri)

    # re-running the same sweep: finished and skipped cells are not run again, failed ones are retried
    said = []
    res2 = run_sweep(cfg, tracking_uri=uri, echo=said.append)
    assert any(x.startswith("classical baseline: already on the parent run") for x in said)  # not recomputed
    assert len(client.get_metric_history(res.parent_run_id, "classical_ws_aji")) == 1
    assert res2.parent_run_id == res.parent_run_id
    assert len(res2.reused) == 4 and len(res2.skipped) == 2 and len(res2.failed) == 2
    assert not res2.finished
    assert res2.registered == "models:/tiny-best/1" and len(client.search_model_versions("name = 'tiny-best'")) == 1

    # the report: one row per (init, freeze, label fraction) that ran, plots written and logged
    rep = build_report(tmp_path / "report", experiment="tiny-ablation", tracking_uri=uri)
    assert len(rep.summary) == 4 and set(rep.summary["n_seeds"]) == {1}
    md = (tmp_path / "report" / "summary.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 4 + 2        # header + 4 cells + the classical references (components, watershed)
    assert "classical H-Otsu (components)" in md and "classical H-Otsu + watershed" in md and "val AJI" in md
    for name in ("dice_vs_budget.png", "dice_bars.png", "aji_vs_budget.png", "pq_bars.png", "summary.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    logged = {a.path for a in client.list_artifacts(res.parent_run_id, "report")}
    assert "report/dice_vs_budget.png" in logged and "report/summary.md" in logged

    # the results section (pipelines/ablation_results.py): tables, plots, and every cell's row as a CSV
    # beside the plots, so the cells' numbers outlive runs/ and the tracking store
    _results_section(tmp_path, uri, monkeypatch, ran)

    # `histoclr report` ends with the link to the experiment's runs in the model-training view
    from click.testing import CliRunner

    from histoclr.cli import cli

    out = CliRunner().invoke(cli, ["report", "-e", "tiny-ablation", "--out", str(tmp_path / "r2"),
                                   "--tracking-uri", uri])
    assert out.exit_code == 0, out.output
    exp_id = client.get_experiment_by_name("tiny-ablation").experiment_id
    assert out.output.rstrip().endswith(
        f"MLflow runs of tiny-ablation: {uri}/#/experiments/{exp_id}/runs?workflowType=machine_learning")


def _results_section(tmp_path: Path, uri: str, monkeypatch, ran) -> None:
    import pandas as pd

    from histoclr.recipes import ablation_results

    doc = tmp_path / "repo" / "docs" / "results.md"
    monkeypatch.setattr(ablation_results, "REPO", tmp_path / "repo")
    monkeypatch.setattr(ablation_results, "RESULTS", doc)
    ablation_results.main(["--experiment", "tiny-ablation", "--tracking-uri", uri, "--out", str(tmp_path / "r1"),
                           "--section", "Tiny", "--img", "tiny", "--command", "histoclr ablate sweep.yaml"])
    text = doc.read_text()
    assert "<!-- BEGIN Tiny -->" in text and "Command: `histoclr ablate sweep.yaml`" in text
    assert "[cells.csv](img/tiny/cells.csv)" in text and "![aji_vs_budget](img/tiny/aji_vs_budget.png)" in text
    cells = pd.read_csv(tmp_path / "repo" / "docs" / "img" / "tiny" / "cells.csv")
    assert sorted(cells["run_id"]) == sorted(r.info.run_id for r in ran)
    by_id = {r.info.run_id: r.data.metrics["best_val_dice"] for r in ran}
    assert all(abs(row.best_val_dice - by_id[row.run_id]) < 1e-9 for row in cells.itertuples())


def _registry_round_trip(best, tmp_path: Path, uri: str) -> None:
    """The registered model loads by ``models:/`` and ``runs:/`` URIs, through the same strict loader
    as its file, and predicts exactly what the file does; an unknown version is one line."""
    import torch
    from mlflow.models import get_model_info

    from histoclr.errors import HistoclrError
    from histoclr.images import normalize_image, read_rgb
    from histoclr.seg.model import load_seg_checkpoint
    from histoclr.seg.predict import sliding_window_predict
    from histoclr.tracking import download_artifact

    local = load_seg_checkpoint(download_artifact(best.info.run_id, "model/best.pt", tmp_path / "file", uri))
    image = normalize_image(read_rgb(tmp_path / "data" / "images" / "img0.png"))
    want = sliding_window_predict(local.model, image, local.window)
    for ref in ("models:/tiny-best/1", f"runs:/{best.info.run_id}/seg_model",
                f"runs:/{best.info.run_id}/model/best.pt"):
        got = load_seg_checkpoint(ref, tracking_uri=uri)
        assert (got.mpp, got.window, got.postprocess, got.metadata["run_id"]) == (
            local.mpp, local.window, local.postprocess, best.info.run_id), ref
        assert torch.equal(sliding_window_predict(got.model, image, got.window), want), ref
    with pytest.raises(HistoclrError) as e:
        load_seg_checkpoint("models:/tiny-best/7", tracking_uri=uri)
    assert "\n" not in str(e.value) and str(e.value).startswith("models:/tiny-best/7: not found")
    # `histoclr predict --model models:/...` (the store of MLFLOW_TRACKING_URI), and an unknown version
    from click.testing import CliRunner

    from histoclr.cli import cli

    env = {"MLFLOW_TRACKING_URI": uri}
    img = tmp_path / "data" / "images" / "img0.png"
    ok = CliRunner().invoke(cli, ["predict", "--model", "models:/tiny-best/1", str(img), "--out", str(tmp_path / "pred")],
                            env=env)
    assert ok.exit_code == 0 and "model models:/tiny-best/1:" in ok.output, ok.output
    bad = CliRunner().invoke(cli, ["predict", "--model", "models:/tiny-best/7", str(img), "--out", str(tmp_path / "p2")],
                             env=env)
    assert bad.exit_code == 2 and "error: models:/tiny-best/7: not found in the MLflow store" in bad.output, bad.output
    # the PyTorch model itself, with its signature and input example, for plain MLflow users
    info = get_model_info("models:/tiny-best/1")
    assert tuple(info.signature.inputs.inputs[0].shape) == (-1, 3, local.window, local.window)
    assert info.saved_input_example_info is not None


def test_bad_grid_fails_before_any_run(tmp_path):
    with pytest.raises(Exception, match="label fraction"):
        cfg = AblationConfig(label_fractions=[1.5])
        cfg.validate()


def test_sub_grids_with_image_counts_expand_seed_major_without_repeats():
    from histoclr.ablation.sweep import cell_config, expand_grid
    from histoclr.config.ablation import AblationConfig
    from histoclr.errors import ConfigError

    cfg = AblationConfig(finetune_config=str(Path(__file__).resolve().parents[2] / "configs/finetune/cpu.yaml"),
                         inits=["random", "simclr:a.pt"], seeds=[0, 1], grids=[
        {"freezes": ["none"], "label_counts": [1, 2, 10]},
        {"freezes": ["layer1-2"], "label_counts": [1, 2]},
        {"freezes": ["all"], "label_counts": [10]},
        {"freezes": ["none"], "label_counts": [2]},            # a repeat: not run twice
    ])
    cfg.validate()
    cells = expand_grid(cfg)
    assert len(cells) == 2 * 2 * (3 + 2 + 1)
    assert all(c.seed == 0 for c in cells[:12]) and all(c.seed == 1 for c in cells[12:])
    first = {(c.freeze, c.num_labeled) for c in cells[:12]}
    assert first == {("none", 1), ("none", 2), ("none", 10), ("layer1-2", 1), ("layer1-2", 2), ("all", 10)}
    assert cells[0].label == "init=random freeze=none labels=1img seed=0" and cells[0].label_fraction is None
    fcfg = cell_config(cfg, cells[0], ["train.epochs=1"], "sqlite:///x.db", "random")
    assert fcfg.num_labeled == 1 and fcfg.label_fraction is None
    for bad in ({"freezes": ["none"]}, {"freezes": ["none"], "label_counts": [1], "label_fractions": [0.5]},
                {"freezes": ["none"], "label_counts": [0]}, {"freezes": ["none"], "budgets": [1], "label_counts": [1]}):
        with pytest.raises(ConfigError, match="grids"):
            AblationConfig(grids=[bad]).validate()


def test_run_first_reorders_the_cells_without_changing_them():
    from histoclr.ablation.sweep import expand_grid
    from histoclr.config.ablation import AblationConfig
    from histoclr.errors import ConfigError

    grids = [{"freezes": ["none"], "label_counts": [1, 2, 10]}, {"freezes": ["all"], "label_counts": [10]}]
    plain = AblationConfig(inits=["random", "simclr:a.pt", "simclr:b.pt"], seeds=[0, 1, 2], grids=grids)
    first = AblationConfig(inits=plain.inits, seeds=plain.seeds, grids=grids,
                           run_first={"inits": ["random", "simclr:b.pt"], "freezes": ["none"], "label_counts": [1, 2]})
    first.validate()
    cells, ordered = expand_grid(plain), expand_grid(first)
    assert sorted(cells, key=str) == sorted(ordered, key=str) and len(ordered) == 36
    head = ordered[:12]                 # 2 inits x 2 budgets x 3 seeds, seed by seed
    assert {(c.init, c.freeze, c.num_labeled) for c in head} == {
        (i, "none", n) for i in ("random", "simclr:b.pt") for n in (1, 2)}
    assert [c.seed for c in head] == [0] * 4 + [1] * 4 + [2] * 4
    assert ordered[12:] == [c for c in cells if c not in head]      # the rest in the grid's order
    for bad, msg in (({"budgets": [1]}, "unknown: budgets"), ({"freezes": []}, "non-empty lists"),
                     ({"inits": ["simclr:c.pt"]}, "'simclr:c.pt' is not one of the sweep's inits")):
        with pytest.raises(ConfigError, match=msg):
            AblationConfig(inits=plain.inits, run_first=bad).validate()
    for none in ({"label_fractions": [0.5]}, {"freezes": ["layer1-2"]}, {"seeds": [7]}):   # matches no cell
        with pytest.raises(HistoclrError, match="selects no cell of the grid"):
            expand_grid(AblationConfig(inits=plain.inits, seeds=plain.seeds, grids=grids, run_first=none))


def test_ablate_prints_the_runs_link_and_the_registered_model(monkeypatch, tmp_path):
    """`histoclr ablate` ends with the link to the experiment's runs view (model-training mode) and
    fails (exit 1) when the registration failed; the sweep itself is stubbed here."""
    from click.testing import CliRunner

    import histoclr.ablation.sweep as sweep
    from histoclr.cli import cli
    from histoclr.tracking import start_run

    def fake_sweep(cfg, overrides, tracking_uri=None, echo=print):
        with start_run(cfg.experiment, cfg.sweep_name) as parent:
            pass
        return sweep.SweepResult(parent.run_id, "", registered=f"models:/{cfg.register_as}/3",
                                 register_error=calls.pop() if calls else None)

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"experiment": "cli-ablation", "register_as": "cli-best"}))
    calls = []
    out = CliRunner().invoke(cli, ["ablate", str(tmp_path / "s.yaml")])
    assert out.exit_code == 0, out.output
    from mlflow.tracking import MlflowClient

    exp_id = MlflowClient().get_experiment_by_name("cli-ablation").experiment_id
    assert "best cell registered as models:/cli-best/3" in out.output
    assert out.output.rstrip().endswith(
        f"MLflow runs of cli-ablation: http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning"
        " (start the UI with `histoclr ui`)")
    calls.append("OSError: disk full")
    out = CliRunner().invoke(cli, ["ablate", str(tmp_path / "s.yaml")])
    assert out.exit_code == 1 and "not registered as 'cli-best': OSError: disk full" in out.output


def test_eta_counts_a_resumed_cells_training_time(tmp_path):
    """A cell resumed from its checkpoint returns at once; the ETA still prices cells at their
    training time (``train_time_s``), not at the seconds the resumed one took, and counts only the
    cells still to train (not the ImageNet arm recorded as skipped offline)."""
    pairs = write_synthetic_pairs(tmp_path / "data")
    ft = {"pairs": str(pairs), "data_root": str(tmp_path / "data"), "out_dir": str(tmp_path / "ft"),
          "model": {"encoder": "resnet18"}, "data": {"mpp": None, "crop_size": 64}}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(ft))
    sweep = {"experiment": "eta", "sweep_name": "eta", "finetune_config": str(tmp_path / "ft.yaml"),
             "inits": ["random", "imagenet"], "freezes": ["none"], "label_fractions": [1.0], "seeds": [0, 1, 2],
             "out_dir": str(tmp_path / "ablation"), "classical_baseline": False, "register_as": None}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    said = []
    res = run_sweep(load_config(AblationConfig, tmp_path / "sweep.yaml"),
                    tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", echo=said.append,
                    cell_runner=lambda fcfg, **kw: {"train_time_s": 600.0})
    assert len(res.finished) == 3 and len(res.skipped) == 3
    starts = [s for s in said if s.startswith("[") and "skipped" not in s]
    assert starts[1].endswith("(about 20 min left)") and starts[2].endswith("(about 10 min left)"), starts


def test_classical_baseline_is_reused_only_for_the_same_data(tmp_path):
    from mlflow import MlflowClient

    from histoclr.ablation.sweep import _log_classical_baseline
    from histoclr.tracking import Run

    pairs = write_synthetic_pairs(tmp_path / "data")
    ft = {"pairs": str(pairs), "data_root": str(tmp_path / "data"), "data": {"mpp": None, "crop_size": 64}}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(ft))
    from histoclr.config.seg import FinetuneConfig

    fcfg = load_config(FinetuneConfig, tmp_path / "ft.yaml")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("baseline")).info.run_id
    parent, said = Run.attach(run_id, uri), []
    _log_classical_baseline(parent, fcfg, said.append)
    _log_classical_baseline(parent, fcfg, said.append)          # resumed: the same data
    assert len(client.get_metric_history(run_id, "classical_ws_aji")) == 1 and len(said) == 1
    lines = pairs.read_text().splitlines()
    pairs.write_text("\n".join(lines[:-1]) + "\n")              # one image fewer: computed again
    _log_classical_baseline(parent, fcfg, said.append)
    assert len(client.get_metric_history(run_id, "classical_ws_aji")) == 2


def test_cell_key_names_a_snapshot_by_its_weights_not_its_path(tmp_path):
    import shutil

    import torch

    from histoclr.ablation.sweep import cell_key
    from histoclr.config.seg import FinetuneConfig
    from histoclr.ssl.model import build_encoder, save_backbone

    torch.manual_seed(0)
    a = save_backbone(tmp_path / "a" / "snap.pt", build_encoder("resnet18"), "resnet18", {"run_id": "pre1"})
    b = tmp_path / "elsewhere" / "copy.pt"
    b.parent.mkdir()
    shutil.copyfile(a, b)
    other = save_backbone(tmp_path / "b" / "snap.pt", build_encoder("resnet18"), "resnet18", {"run_id": "pre1"})

    def key(init):
        fcfg = FinetuneConfig()
        fcfg.init = init
        return cell_key(fcfg)

    assert key(f"simclr:{a}") == key(f"simclr:{b}")            # same weights, another checkout
    assert key(f"simclr:{a}") != key(f"simclr:{other}")        # other weights: another cell
    assert key(f"simclr:{a}") != key("random")
    with pytest.raises(HistoclrError, match="missing.pt: backbone file not found"):
        key(f"simclr:{tmp_path / 'missing.pt'}")


def test_two_snapshots_with_one_file_name_fail_before_any_run(tmp_path):
    import torch
    from mlflow import MlflowClient

    from histoclr.ssl.model import build_encoder, save_backbone

    torch.manual_seed(0)
    a = save_backbone(tmp_path / "run_a" / "backbone_step002000.pt", build_encoder("resnet18"), "resnet18", {})
    b = save_backbone(tmp_path / "run_b" / "backbone_step002000.pt", build_encoder("resnet18"), "resnet18", {})
    pairs = write_synthetic_pairs(tmp_path / "data")
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump({"pairs": str(pairs), "data_root": str(tmp_path / "data"),
                                                      "model": {"encoder": "resnet18"}, "data": {"mpp": None}}))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "experiment": "names", "sweep_name": "names", "finetune_config": str(tmp_path / "ft.yaml"),
        "inits": ["random", f"simclr:{a}", f"simclr:{b}"], "freezes": ["none"], "label_counts": [1],
        "seeds": [0], "out_dir": str(tmp_path / "ablation"), "register_as": None}))
    cfg = load_config(AblationConfig, tmp_path / "sweep.yaml")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(HistoclrError, match="have the same file name"):
        run_sweep(cfg, tracking_uri=uri, cell_runner=lambda *a, **k: pytest.fail("trained"), echo=lambda s: None)
    assert MlflowClient(uri).get_experiment_by_name("names") is None   # nothing was opened


def test_a_snapshot_rewritten_during_the_sweep_stops_it_before_a_record_names_it(tmp_path):
    """Cells are keyed by their snapshot's sha256: when a pretraining run rewrites the file while the
    sweep runs, the sweep stops with one line instead of recording the cell under weights it did not
    start from, or training the next cells from other weights than their keys say."""
    import torch

    from histoclr.ssl.model import build_encoder, save_backbone

    torch.manual_seed(0)
    snap = save_backbone(tmp_path / "snap.pt", build_encoder("resnet18"), "resnet18", {})
    pairs = write_synthetic_pairs(tmp_path / "data")
    ft = {"pairs": str(pairs), "data_root": str(tmp_path / "data"), "data": {"mpp": None, "crop_size": 64}}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(ft))
    sweep = {"experiment": "rewrite", "sweep_name": "rewrite", "finetune_config": str(tmp_path / "ft.yaml"),
             "inits": [f"simclr:{snap}"], "freezes": ["none"], "label_fractions": [1.0], "seeds": [0, 1],
             "out_dir": str(tmp_path / "ablation"), "classical_baseline": False, "register_as": None,
             "records_dir": str(tmp_path / "records")}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    calls = []

    def runner(fcfg, parent_run_id, extra_tags):   # a finished cell, and meanwhile the snapshot is rewritten
        from histoclr.tracking import open_run

        calls.append(fcfg.seed)
        open_run("rewrite", fcfg.tracking.run_name, tracking_uri=fcfg.tracking.tracking_uri, tags=extra_tags,
                 parent_run_id=parent_run_id).end("FINISHED")
        save_backbone(snap, build_encoder("resnet18"), "resnet18", {})
        return {}

    with pytest.raises(HistoclrError, match=r"snap.pt: the snapshot changed while the sweep ran"):
        run_sweep(load_config(AblationConfig, tmp_path / "sweep.yaml"),
                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", echo=lambda s: None, cell_runner=runner)
    assert calls == [0]
    assert not list((tmp_path / "records").glob("cells/*.json"))

    # started again on the new weights: both cells train; the cell of the old weights leaves the tables
    from histoclr.ablation.records import SUPERSEDED_TAG
    from histoclr.tracking import child_runs

    def plain(fcfg, parent_run_id, extra_tags):
        from histoclr.tracking import open_run

        calls.append(fcfg.seed)
        open_run("rewrite", fcfg.tracking.run_name, tracking_uri=fcfg.tracking.tracking_uri, tags=extra_tags,
                 parent_run_id=parent_run_id).end("FINISHED")
        return {}

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    said = []
    res = run_sweep(load_config(AblationConfig, tmp_path / "sweep.yaml"), tracking_uri=uri, echo=said.append,
                    cell_runner=plain)
    assert calls == [0, 0, 1] and len(res.finished) == 2
    old = [r for r in child_runs(res.parent_run_id, uri) if SUPERSEDED_TAG in r.data.tags]
    assert len(old) == 1 and old[0].info.status == "KILLED"
    assert any("1 finished cell(s) of this sweep were trained from other snapshot weights" in s for s in said), said
    assert len(collect_runs(res.parent_run_id, uri)) == 2

    # rewritten after the sweep planned its cells but before the first one starts: nothing trains
    def rewrite_on_start(line):
        if line.startswith(("started sweep", "resuming sweep")):
            save_backbone(snap, build_encoder("resnet18"), "resnet18", {})

    cfg = load_config(AblationConfig, tmp_path / "sweep.yaml")
    cfg.records_dir = None
    with pytest.raises(HistoclrError, match=r"snap.pt: the snapshot changed while the sweep ran"):
        run_sweep(cfg, tracking_uri=f"sqlite:///{tmp_path / 'b.db'}", echo=rewrite_on_start, cell_runner=plain)
    assert calls == [0, 0, 1]
