"""The pipeline's final-model choice: the ablation arm with the best mean validation AJI."""

from __future__ import annotations

import pandas as pd

from histoclr.recipes.pipeline import final_init


def test_final_init_picks_the_best_arm_by_aji_at_the_largest_budget(tmp_path):
    csv = tmp_path / "summary.csv"
    pd.DataFrame([
        {"init": "random", "freeze": "none", "label_fraction": 1.0, "val_aji_mean": 0.50},
        {"init": "simclr:/b.pt", "freeze": "none", "label_fraction": 1.0, "val_aji_mean": 0.55},
        {"init": "simclr:/b.pt", "freeze": "all", "label_fraction": 1.0, "val_aji_mean": 0.40},   # mean 0.475
        {"init": "random", "freeze": "none", "label_fraction": 0.5, "val_aji_mean": 0.90},        # smaller budget
    ]).to_csv(csv, index=False)
    assert final_init("auto", csv, tmp_path / "backbone.pt") == "random"
    assert final_init("simclr", csv, tmp_path / "backbone.pt") == f"simclr:{tmp_path / 'backbone.pt'}"
    assert final_init("auto", tmp_path / "missing.csv", tmp_path / "backbone.pt") == "random"
