"""`histoclr report`'s tables and plot labels from a runs table (no tracking store needed)."""

from __future__ import annotations

import pandas as pd

from histoclr.ablation.report import (
    METRICS,
    _short_init,
    budget_ticks,
    plot_budget_curves,
    summarize,
    to_markdown,
)


def _runs():
    rows = []
    for init in ("random", "simclr:/r/snapshots/backbone_step000250.pt", "simclr:/r/snapshots/backbone_step002000.pt"):
        for n, seed in ((1, "0"), (1, "1"), (2, "0")):
            rows.append({"run_id": f"{init}{n}{seed}", "init": init, "freeze": "none", "label_fraction": n / 10,
                         "num_labeled": str(n), "seed": seed, **{m: 0.1 * n for m in METRICS}})
    return pd.DataFrame(rows)


def test_summary_keeps_the_image_count_and_the_table_shows_it():
    summary = summarize(_runs())
    assert len(summary) == 6 and list(summary["n_seeds"]) == [2, 1] * 3
    assert list(summary["num_labeled"]) == ["1", "2"] * 3
    md = to_markdown(summary, {})
    assert "| simclr:backbone_step002000.pt | none | 2 img (20%) | 1 |" in md
    assert budget_ticks(summary) == ([10.0, 20.0], ["1 img\n(10%)", "2 img\n(20%)"])


def test_mixed_image_counts_fall_back_to_the_fraction(tmp_path):
    runs = _runs()
    runs.loc[(runs["label_fraction"] == 0.1) & (runs["seed"] == "1"), "num_labeled"] = "3"
    summary = summarize(runs)
    assert budget_ticks(summary)[1][0] == "10%"
    assert plot_budget_curves(summary, {"aji": 0.3}, tmp_path / "aji.png", "val_aji").stat().st_size > 0
    other = _runs()                       # every seed of one arm agrees on 3, the other arms on 1
    first = other["init"].iloc[0]
    other.loc[(other["label_fraction"] == 0.1) & (other["init"] == first), "num_labeled"] = "3"
    assert budget_ticks(summarize(other))[1][0] == "10%"


def test_legend_names_tell_snapshots_apart():
    names = {_short_init(i) for i in _runs()["init"]}
    assert names == {"random", "simclr:backbone_step000250", "simclr:backbone_step002000"}
