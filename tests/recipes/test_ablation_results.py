"""Paired SimCLR - random differences, per snapshot, freeze and budget, by seed."""

from __future__ import annotations

import pandas as pd
import pytest

from histoclr.recipes.ablation_results import paired_differences


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
