"""`histoclr report`: mean and spread over seeds per ablation cell, as tables and plots."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from histoclr.ablation.records import INIT_TAG
from histoclr.demo import DEMO_HEADER, DEMO_TAG
from histoclr.errors import HistoclrError
from histoclr.io import atomic_path, atomic_write_text
from histoclr.seg.naming import display_init
from histoclr.tracking import (
    Run,
    child_runs,
    find_runs,
    resolve_tracking_uri,
    result_metrics,
    run_exists,
)

GROUP = ["init", "freeze", "label_fraction"]
METRICS = ["val_aji", "val_pq", "best_val_dice", "val_f1", "val_iou", "train_time_s"]
BASELINE_KEY = {"val_aji": "aji", "val_pq": "pq", "best_val_dice": "dice", "val_f1": "f1", "val_iou": "iou"}
LABELS = {"val_aji": "validation AJI", "val_pq": "validation PQ", "best_val_dice": "validation Dice",
          "val_f1": "validation detection F1", "val_iou": "validation IoU"}
PLOTTED = ("val_aji", "val_pq", "best_val_dice")      # a budget curve and a bar chart each


@dataclass
class Report:
    parent_run_id: str
    runs: object      # pandas.DataFrame: one row per finished child run
    summary: object   # pandas.DataFrame: one row per (init, freeze, label_fraction)
    baseline: dict[str, float]
    files: list[Path]
    experiment_id: str = ""


def find_parent(experiment: str | None = None, parent_run_id: str | None = None,
                tracking_uri: str | None = None) -> str:
    """The sweep's parent run: given directly, or the newest parent in ``experiment``."""
    if parent_run_id:
        if not run_exists(parent_run_id, tracking_uri):
            raise HistoclrError(f"no run {parent_run_id} in the tracking store")
        return parent_run_id
    if not experiment or not find_runs(experiment, tracking_uri, max_results=1):
        raise HistoclrError(f"no MLflow experiment named {experiment!r} (or no runs in it) in the tracking store")
    runs = find_runs(experiment, tracking_uri, tags={"histoclr.kind": "ablation-parent"}, max_results=1)
    if not runs:
        raise HistoclrError(f"experiment {experiment!r} has no ablation sweep (run `histoclr ablate` first)")
    return runs[0].info.run_id


def collect_runs(parent_run_id: str, tracking_uri: str | None = None):
    """One row per FINISHED, non-skipped child: the shared params and final metrics."""
    import pandas as pd

    rows = []
    for r in child_runs(parent_run_id, tracking_uri):
        if r.info.status != "FINISHED" or r.data.tags.get("skipped") == "true":
            continue
        p, m = r.data.params, result_metrics(r, METRICS, tracking_uri)
        rows.append({"run_id": r.info.run_id, "init": r.data.tags.get(INIT_TAG) or p.get("init"), "freeze": p.get("freeze"),
                     "label_fraction": float(p.get("label_fraction", "nan")),
                     "num_labeled": p.get("num_labeled"), "seed": p.get("seed"),
                     **{k: m.get(k, float("nan")) for k in METRICS}})
    return pd.DataFrame(rows, columns=["run_id", *GROUP, "num_labeled", "seed", *METRICS])


def summarize(runs):
    """Mean, std and count over seeds per (init, freeze, label_fraction)."""
    import pandas as pd

    if runs.empty:
        return pd.DataFrame(columns=[*GROUP, "n_seeds"])
    g = runs.groupby(GROUP, sort=True)
    out = g[METRICS].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out.insert(0, "n_seeds", g.size())
    out.insert(1, "num_labeled", g["num_labeled"].agg(_one_count))
    return out.reset_index()


def _one_count(values) -> str:
    """The cell's number of labelled images when every seed had the same ("2"), else ""."""
    counts = {str(v) for v in values if str(v) not in ("", "none", "None", "nan")}
    return counts.pop() if len(counts) == 1 else ""


def budget_label(label_fraction: float, num_labeled: str = "") -> str:
    """A label budget as a reader counts it: "2 img (20%)" when the images are known, else "20%"."""
    return f"{num_labeled} img ({label_fraction:.0%})" if num_labeled else f"{label_fraction:.0%}"


def budget_labels(runs) -> dict[float, str]:
    """``{label_fraction: budget_label}`` over a runs table (:func:`collect_runs`); the image count
    only where every run of that fraction had the same one."""
    if "num_labeled" not in runs:
        return {float(lf): budget_label(float(lf)) for lf in set(runs["label_fraction"])}
    return {float(lf): budget_label(float(lf), _one_count(d))
            for lf, d in runs.groupby("label_fraction")["num_labeled"]}


def budget_ticks(summary) -> tuple[list[float], list[str]]:
    """x positions (label fraction in %) and their labels: "2 img\\n(20%)" when the images are known."""
    pos, names = [], []
    for lf, d in summary.groupby("label_fraction", sort=True):
        n = _one_count(d.get("num_labeled", []))   # as budget_labels: only a count every cell agrees on
        pos.append(float(lf) * 100)
        names.append(budget_label(lf, n).replace(" (", "\n("))
    return pos, names


def to_markdown(summary, baseline: dict[str, float]) -> str:
    """A Markdown table (mean ± std) of the summary, plus the classical references (``baseline``:
    ``{aji, pq, ...}`` of Otsu's components and ``{ws_aji, ws_pq, ...}`` with the watershed split)."""
    lines = ["| init | freeze | labels | seeds | val AJI | val PQ | val Dice | val F1 | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def pm(row, m, fmt="{:.3f}"):
        mean, std = row[f"{m}_mean"], row[f"{m}_std"]
        return fmt.format(mean) + ("" if math.isnan(std) else " ± " + fmt.format(std))

    for _, r in summary.iterrows():
        lines.append(f"| {display_init(r['init'])} | {r['freeze']} | "
                     f"{budget_label(r['label_fraction'], r.get('num_labeled') or '')} | {int(r['n_seeds'])} | "
                     f"{pm(r, 'val_aji')} | {pm(r, 'val_pq')} | {pm(r, 'best_val_dice')} | {pm(r, 'val_f1')} | "
                     f"{pm(r, 'train_time_s', '{:.0f}')} |")
    nan = float("nan")
    for name, prefix in (("classical H-Otsu (components)", ""), ("classical H-Otsu + watershed", "ws_")):
        if f"{prefix}aji" in baseline:
            lines.append(f"| {name} | - | - | - | " + " | ".join(
                f"{baseline.get(prefix + k, nan):.3f}" for k in ("aji", "pq", "dice", "f1")) + " | - |")
    return "\n".join(lines) + "\n"


def _short_init(init: str) -> str:
    """A legend name: ``simclr:backbone_step002000`` (the file's stem, so snapshots differ), else the init."""
    return f"simclr:{Path(init.split(':', 1)[1]).stem}" if init.startswith("simclr:") else init


def _baseline_lines(ax, baseline: dict[str, float], metric: str) -> None:
    key = BASELINE_KEY.get(metric)
    if key and key in baseline:
        ax.axhline(baseline[key], color="grey", ls="--", label="classical H-Otsu")
    if key and f"ws_{key}" in baseline:
        ax.axhline(baseline[f"ws_{key}"], color="black", ls=":", label="classical H-Otsu + watershed")


def plot_budget_curves(summary, baseline: dict[str, float], path: Path, metric: str = "best_val_dice") -> Path:
    """``metric`` against label budget, one line per init/freeze, classical references dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = list(summary.groupby(["init", "freeze"], sort=True))
    for k, ((init, freeze), df) in enumerate(groups):
        df = df.sort_values("label_fraction")
        shift = (k - (len(groups) - 1) / 2) * 0.8      # a little apart, so the error bars stay readable
        ax.errorbar(df["label_fraction"] * 100 + shift, df[f"{metric}_mean"], yerr=df[f"{metric}_std"].fillna(0),
                    marker="o", capsize=3, label=f"{_short_init(init)} / freeze {freeze}")
    _baseline_lines(ax, baseline, metric)
    ax.set_xticks(*budget_ticks(summary))
    ax.set_xlabel("labelled training images (share of the label pool)")
    ax.set_ylabel(LABELS.get(metric, metric))
    ax.set_title("Nucleus segmentation vs label budget (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def plot_bars(summary, baseline: dict[str, float], path: Path, metric: str = "best_val_dice") -> Path:
    """Grouped bars: one group per label budget, one bar per init/freeze (the seeds' comparison)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arms = sorted({(i, f) for i, f in zip(summary["init"], summary["freeze"])})
    budgets = sorted(summary["label_fraction"].unique())
    width = 0.8 / max(len(arms), 1)
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(budgets) * max(len(arms), 1) * 0.5), 4.5))
    x = np.arange(len(budgets))
    for k, (init, freeze) in enumerate(arms):
        sel = summary[(summary["init"] == init) & (summary["freeze"] == freeze)].set_index("label_fraction")
        means = [sel[f"{metric}_mean"].get(b, np.nan) for b in budgets]
        stds = [sel[f"{metric}_std"].get(b, np.nan) for b in budgets]
        ax.bar(x + (k - (len(arms) - 1) / 2) * width, means, width, yerr=np.nan_to_num(stds), capsize=2,
               label=f"{_short_init(init)} / {freeze}")
    _baseline_lines(ax, baseline, metric)
    ax.set_xticks(x, budget_ticks(summary)[1])
    ax.set_xlabel("label budget")
    ax.set_ylabel(LABELS.get(metric, metric))
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Ablation: init x freeze x label budget")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def build_report(out_dir: str | Path, experiment: str | None = None, parent_run_id: str | None = None,
                 tracking_uri: str | None = None, log_to_parent: bool = True) -> Report:
    """Write ``runs.csv``, ``summary.csv``, ``summary.md`` and, for AJI, PQ and Dice,
    ``<metric>_vs_budget.png`` and ``<metric>_bars.png`` (``aji_``, ``pq_``, ``dice_``) to ``out_dir``."""
    uri = resolve_tracking_uri(tracking_uri)
    parent = find_parent(experiment, parent_run_id, uri)
    parent_run = Run.attach(parent, uri)
    runs = collect_runs(parent, uri)
    if runs.empty:
        raise HistoclrError(f"sweep {parent} has no finished cells yet")
    summary = summarize(runs)
    pm = parent_run.get().data.metrics
    baseline = {k[len("classical_"):]: v for k, v in pm.items() if k.startswith("classical_")}
    out = Path(out_dir)
    files = [out / "runs.csv", out / "summary.csv", out / "summary.md"]
    atomic_write_text(files[0], runs.to_csv(index=False))
    atomic_write_text(files[1], summary.to_csv(index=False))
    markdown = to_markdown(summary, baseline)
    if parent_run.get().data.tags.get(DEMO_TAG) == "true":
        markdown = f"{DEMO_HEADER}\n\n{markdown}"
    atomic_write_text(files[2], markdown)
    for metric in PLOTTED:
        short = BASELINE_KEY[metric]
        files.append(plot_budget_curves(summary, baseline, out / f"{short}_vs_budget.png", metric))
        files.append(plot_bars(summary, baseline, out / f"{short}_bars.png", metric))
    if log_to_parent:
        for f in files:
            parent_run.log_artifact(f, "report")
    return Report(parent, runs, summary, baseline, files, parent_run.get().info.experiment_id)
