"""Paired SimCLR - random differences, per snapshot, freeze and budget, by seed."""

from __future__ import annotations

import pandas as pd
import pytest

from histoclr.recipes.ablation_results import (
    curve_shape,
    paired_differences,
    plot_snapshot_curve,
    pretraining_step,
    snapshot_curve,
    target_verdict,
)


def test_paired_differences_per_snapshot_by_seed():
    rows = []
    for seed, (r, a, b) in enumerate([(0.40, 0.45, 0.38), (0.50, 0.52, 0.49)]):
        for init, v in (("random", r), ("simclr:/s/step250.pt", a), ("simclr:/s/step2000.pt", b)):
            rows.append({"init": init, "freeze": "none", "label_fraction": 0.1, "seed": str(seed), "val_aji": v})
    rows.append({"init": "random", "freeze": "all", "label_fraction": 1.0, "seed": "0", "val_aji": 0.3})  # unpaired
    d = paired_differences(pd.DataFrame(rows), "val_aji").set_index("init")
    assert set(d.index) == {"simclr:/s/step250.pt", "simclr:/s/step2000.pt"}
    early, last = d.loc["simclr:/s/step250.pt"], d.loc["simclr:/s/step2000.pt"]
    assert early["mean"] == pytest.approx((0.05 + 0.02) / 2) and early["positive"] == 2 and early["n"] == 2
    assert last["min"] == pytest.approx(-0.02) and last["max"] == pytest.approx(-0.01) and last["positive"] == 0
    assert paired_differences(pd.DataFrame([r for r in rows if r["init"] != "random"]), "val_aji").empty


def _sweep_rows(values):
    """values: {(init, freeze, label_fraction): [AJI by seed]} -> runs table."""
    return pd.DataFrame([{"init": i, "freeze": f, "label_fraction": lf, "seed": str(s), "val_aji": v}
                         for (i, f, lf), vs in values.items() for s, v in enumerate(vs)])


def test_pretraining_step_and_snapshot_curve_shape(tmp_path):
    early, last = "simclr:/r/snapshots/backbone_step000250.pt", "simclr:/r/snapshots/backbone_step002000.pt"
    assert pretraining_step("random") == 0 and pretraining_step(last) == 2000
    assert pretraining_step("imagenet") is None and pretraining_step("simclr:abc123runid") is None
    runs = _sweep_rows({("random", "none", 0.1): [0.30, 0.32], (early, "none", 0.1): [0.34, 0.36],
                        (last, "none", 0.1): [0.40, 0.42], ("random", "all", 1.0): [0.2, 0.2],
                        (early, "all", 1.0): [0.30, 0.30], (last, "all", 1.0): [0.25, 0.25],
                        ("imagenet", "none", 0.1): [0.9, 0.9]})
    curve = snapshot_curve(runs)
    none = curve[curve["freeze"] == "none"].set_index("step")
    assert list(none.index) == [0, 250, 2000] and none.loc[2000, "mean"] == pytest.approx(0.41)
    assert none.loc[0, "n"] == 2  # imagenet left out: it has no step
    assert curve_shape(curve) == {("none", 0.1): "rising", ("all", 1.0): "falling"}
    out = plot_snapshot_curve(curve, tmp_path / "curve.png")
    assert out.stat().st_size > 5000


def test_target_verdict_met_missed_and_frozen_probe():
    last = "simclr:/r/backbone_step002000.pt"
    runs = _sweep_rows({("random", "none", 0.1): [0.30, 0.30, 0.30], (last, "none", 0.1): [0.35, 0.34, 0.36],
                        ("random", "none", 0.2): [0.40, 0.40, 0.40], (last, "none", 0.2): [0.45, 0.39, 0.46],
                        ("random", "layer1-2", 0.1): [0.3, 0.3, 0.3], (last, "layer1-2", 0.1): [0.31, 0.31, 0.31],
                        ("random", "none", 1.0): [0.5, 0.5, 0.5], (last, "none", 1.0): [0.4, 0.4, 0.4],
                        ("random", "all", 1.0): [0.2, 0.2, 0.2], (last, "all", 1.0): [0.19, 0.19, 0.19]})
    lines = target_verdict(paired_differences(runs, "val_aji"), last)
    text = "\n".join(lines)
    assert len(lines) == 4  # the 100 % full fine-tuning cell is not a target cell
    assert "freeze none, labels 10%: SimCLR − random +0.050 AJI (3/3 seeds positive" in text
    assert any("none, labels 10%" in x and x.endswith(": met") for x in lines)
    assert any("none, labels 20%" in x and x.endswith("missed (not every seed positive)") for x in lines)
    assert any("layer1-2, labels 10%" in x and x.endswith("missed by 0.020") for x in lines)
    assert any("frozen probe" in x and x.endswith("missed by 0.010") for x in lines)


def test_target_verdict_marks_a_running_sweep_provisional(tmp_path):
    from mlflow import MlflowClient

    from histoclr.recipes.ablation_results import expected_seeds

    last = "simclr:/r/backbone_step002000.pt"
    runs = _sweep_rows({("random", "none", 0.1): [0.30], (last, "none", 0.1): [0.40],
                        ("random", "none", 0.2): [0.30, 0.30, 0.30], (last, "none", 0.2): [0.40, 0.40, 0.40]})
    lines = target_verdict(paired_differences(runs, "val_aji"), last, seeds_expected=3)
    assert lines[0].endswith(": met (provisional: 1 of 3 seeds finished)")
    assert lines[1].endswith(": met")  # all three seeds in: a verdict

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("sweep"))
    client.log_param(run.info.run_id, "seeds", "[0, 1, 2]")
    assert expected_seeds(run.info.run_id, uri) == 3
    bare = client.create_run(run.info.experiment_id)
    assert expected_seeds(bare.info.run_id, uri) is None


def test_paired_by_seed_table_and_plot(tmp_path):
    from histoclr.recipes.ablation_results import by_seed_table, paired_by_seed, plot_paired_by_seed

    early, last = "simclr:/r/backbone_step000250.pt", "simclr:/r/backbone_step002000.pt"
    runs = _sweep_rows({("random", "none", 0.1): [0.30, 0.40, 0.50], (last, "none", 0.1): [0.35, 0.38],
                        (early, "none", 0.1): [0.31, 0.41, 0.52], ("random", "all", 1.0): [0.2]})
    d = paired_by_seed(runs, "val_aji")
    assert len(d) == 5  # 3 seeds for step 250, 2 for step 2000 (its seed 2 has not run); the unpaired arm is out
    got = {(r.init, r.seed): round(r.diff, 3) for r in d.itertuples()}
    assert got[(last, "1")] == -0.02 and got[(early, "2")] == 0.02
    text = "\n".join(by_seed_table(d))
    assert "| backbone_step002000 | none | 10% | +0.050 | -0.020 | – |" in text
    assert plot_paired_by_seed(d, tmp_path / "by_seed.png").stat().st_size > 0
    assert paired_by_seed(runs[runs["init"] != "random"], "val_aji").empty


def test_sweep_state_says_provisional_until_every_cell_finished(tmp_path):
    from mlflow import MlflowClient

    from histoclr.recipes.ablation_results import sweep_state

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("sweep"), tags={"cells_total": "54"})
    assert sweep_state(run.info.run_id, 12, uri).startswith("12 of 54 cells finished; the sweep is still running")
    client.set_terminated(run.info.run_id, "FINISHED")
    assert sweep_state(run.info.run_id, 54, uri) == "54 of 54 cells finished"
    assert "provisional" in sweep_state(run.info.run_id, 50, uri)  # finished with failed cells


def test_sweep_state_names_cells_beyond_a_narrower_last_plan(tmp_path):
    from mlflow import MlflowClient

    from histoclr.recipes.ablation_results import sweep_state

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("sweep"), tags={"cells_total": "2"})
    client.set_terminated(run.info.run_id, "FINISHED")
    text = sweep_state(run.info.run_id, 4, uri)
    assert text.startswith("4 cells finished (2 in the sweep's last plan") and "4 of 2" not in text
    assert "provisional" not in text
    client.set_tag(run.info.run_id, "cells_failed", "1")   # the narrower plan failed a cell: older ones do not hide it
    assert "1 cell(s) of the last plan failed" in sweep_state(run.info.run_id, 4, uri)
    assert "provisional" in sweep_state(run.info.run_id, 4, uri)


def test_budgets_are_named_by_their_image_count_where_it_is_known():
    from histoclr.ablation.report import budget_labels
    from histoclr.recipes.ablation_results import by_seed_table, paired_by_seed

    last = "simclr:/r/backbone_step002000.pt"
    runs = _sweep_rows({("random", "none", 0.1): [0.30, 0.30, 0.30], (last, "none", 0.1): [0.35, 0.34, 0.36],
                        ("random", "none", 0.2): [0.4], (last, "none", 0.2): [0.5]})
    runs["num_labeled"] = ["1" if lf == 0.1 else "" for lf in runs["label_fraction"]]
    budgets = budget_labels(runs)
    assert budgets == {0.1: "1 img (10%)", 0.2: "20%"}  # 20 %: no image count recorded, the share stays
    lines = target_verdict(paired_differences(runs, "val_aji"), last, budgets=budgets)
    assert lines[0].startswith("- freeze none, labels 1 img (10%): SimCLR − random +0.050 AJI")
    assert lines[1].startswith("- freeze none, labels 20%: ")
    assert "| backbone_step002000 | none | 1 img (10%) | +0.050 | +0.040 | +0.060 |" in \
        "\n".join(by_seed_table(paired_by_seed(runs, "val_aji"), budgets=budgets))
    mixed = runs.assign(num_labeled=["1", "2", "1", "1", "1", "1", "", ""])
    assert budget_labels(mixed)[0.1] == "10%"  # seeds disagree on the count: only the share is certain


def test_nothing_to_pair_gives_empty_tables_not_a_crash():
    last = "simclr:/r/backbone_step002000.pt"
    runs = _sweep_rows({(last, "none", 0.1): [0.35, 0.34]})  # the random arm has not finished (or failed)
    diffs = paired_differences(runs, "val_aji")
    assert diffs.empty and "mean" in diffs.columns
    assert target_verdict(diffs, last) == []


def test_sweep_state_does_not_count_skipped_cells_as_missing(tmp_path):
    from mlflow import MlflowClient

    from histoclr.recipes.ablation_results import sweep_state

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("sweep")
    parent = client.create_run(exp, tags={"cells_total": "3"}).info.run_id
    skipped = client.create_run(exp, tags={"mlflow.parentRunId": parent, "skipped": "true"}).info.run_id
    client.set_terminated(skipped, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    assert sweep_state(parent, 2, uri) == "2 of 2 cells finished (1 more recorded as skipped)"
    assert "provisional" in sweep_state(parent, 1, uri)


def test_cell_machines_counts_where_cells_trained_and_which_were_restored(tmp_path):
    from mlflow import MlflowClient

    from histoclr.ablation.records import RESTORED_TAG
    from histoclr.recipes.ablation_results import cell_machines
    from histoclr.tracking import MACHINE_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("sweep")
    parent = client.create_run(exp).info.run_id
    assert cell_machines(parent, uri) == ""
    for tags in ({MACHINE_TAG: "2 CPU cores (A)"}, {MACHINE_TAG: "2 CPU cores (A)", RESTORED_TAG: "r0"},
                 {MACHINE_TAG: "2 CPU cores (B)"}, {}, {"skipped": "true"}):
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent, **tags}).info.run_id
        client.set_terminated(run, "FINISHED")
    client.create_run(exp, tags={"mlflow.parentRunId": parent, MACHINE_TAG: "C"})      # still running: not counted
    assert cell_machines(parent, uri) == (
        "Cells trained on 2 CPU cores (A): 2; 2 CPU cores (B): 1; a machine not recorded: 1. 1 of the 4 were "
        "trained in earlier sessions and restored into this MLflow store from their records in git (the "
        "sweep's `records_dir`).")


def test_results_command_without_a_sweep_is_one_line(capsys):
    from histoclr.recipes.ablation_results import main

    with pytest.raises(SystemExit) as e:
        main(["--experiment", "no-such-sweep", "--no-doc"])
    assert str(e.value).startswith("error: no MLflow experiment named 'no-such-sweep'")
    assert "\n" not in str(e.value)
