"""Write the ablation's section of docs/results.md from a finished (or partly finished) sweep.

Runs `histoclr report` on the sweep (tables + plots, logged on its parent run), copies the plots and
every cell's row (``cells.csv``) to docs/img/ablation_cpu/, adds the paired comparison the question
needs (SimCLR minus random init, same freeze / budget / seed, so the label subset and crops are the
same) and writes the section
"Ablation: SimCLR vs random init x freezing x label budget (CPU)" with the exact commands.

    python pipelines/ablation_results.py --tracking-uri sqlite:////work/main/mlflow.db \
        --command "histoclr ablate configs/ablation/cpu.yaml" --note "How to read it: ..."
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from histoclr.ablation.records import RESTORED_TAG
from histoclr.ablation.report import budget_label, budget_labels, build_report
from histoclr.docs_sections import RESULTS, write_section
from histoclr.errors import HistoclrError
from histoclr.io import atomic_copy
from histoclr.tracking import MACHINE_TAG, Run, child_runs

REPO = Path(__file__).resolve().parents[2]
SECTION = "Ablation: SimCLR vs random init x freezing x label budget (CPU)"


def paired_differences(runs, metric: str = "val_aji"):
    """Per (SimCLR init, freeze, label_fraction): mean, min, max and the count of positive differences
    over seeds of that init minus random init on ``metric`` (same freeze, budget and seed)."""
    import pandas as pd

    by_seed = paired_by_seed(runs, metric)
    out = [{"init": init, "freeze": freeze, "label_fraction": lf, "mean": d.mean(), "min": d.min(),
            "max": d.max(), "positive": int((d > 0).sum()), "n": int(d.size)}
           for (init, freeze, lf), d in by_seed.groupby(["init", "freeze", "label_fraction"], sort=False)["diff"]]
    return pd.DataFrame(out, columns=["init", "freeze", "label_fraction", "mean", "min", "max", "positive", "n"])


def paired_by_seed(runs, metric: str = "val_aji"):
    """One row per (SimCLR init, freeze, label_fraction, seed): ``diff`` = that init minus random init
    on ``metric`` (same freeze, budget and seed); seeds without both arms are left out."""
    import pandas as pd

    wide = runs.pivot_table(index=["freeze", "label_fraction", "seed"], columns="init", values=metric)
    if "random" not in wide.columns:
        return pd.DataFrame(columns=["init", "freeze", "label_fraction", "seed", "diff"])
    parts = [(wide[c] - wide["random"]).dropna().rename("diff").reset_index().assign(init=c)
             for c in wide.columns if str(c).startswith("simclr:")]
    if not parts:
        return pd.DataFrame(columns=["init", "freeze", "label_fraction", "seed", "diff"])
    return pd.concat(parts, ignore_index=True)[["init", "freeze", "label_fraction", "seed", "diff"]]


def by_seed_table(by_seed, metric_name: str = "AJI", budgets: dict[float, str] | None = None) -> list[str]:
    """Markdown rows: one per (init, freeze, budget), one column per seed (the paired difference);
    ``budgets`` (:func:`~histoclr.ablation.report.budget_labels`) names the budgets, else "10%"."""
    seeds = sorted({str(s) for s in by_seed["seed"]}, key=lambda x: (len(x), x))
    lines = ["| SimCLR init | freeze | labels | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|---|" + "---:|" * len(seeds)]
    for (init, freeze, lf), d in by_seed.groupby(["init", "freeze", "label_fraction"], sort=True):
        v = dict(zip(d["seed"].astype(str), d["diff"]))
        lines.append(f"| {_short(init)} | {freeze} | {_budget(lf, budgets)} | "
                     + " | ".join(f"{v[s]:+.3f}" if s in v else "–" for s in seeds) + " |")
    return [f"SimCLR − random, val {metric_name}, by seed:", "", *lines]


def plot_paired_by_seed(by_seed, path: Path, margin: float = 0.03, metric_label: str = "val AJI",
                        budgets: dict[float, str] | None = None) -> Path:
    """Each seed's paired difference (a dot) per freeze x budget cell, one colour per snapshot; the
    zero line and the ``margin`` target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from histoclr.io import atomic_path

    cells = sorted({(f, lf) for f, lf in zip(by_seed["freeze"], by_seed["label_fraction"])},
                   key=lambda c: (c[0], c[1]))
    inits = sorted(set(by_seed["init"]), key=lambda i: (pretraining_step(i) or 0, i))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(cells)), 4.2))
    width = 0.7 / max(len(inits), 1)
    for k, init in enumerate(inits):
        d = by_seed[by_seed["init"] == init]
        x = [cells.index((f, lf)) + (k - (len(inits) - 1) / 2) * width for f, lf in zip(d["freeze"], d["label_fraction"])]
        ax.scatter(x, d["diff"], s=28, label=_short(init), zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(margin, color="grey", ls="--", lw=0.8, label=f"target +{margin:.2f}")
    ax.set_xticks(range(len(cells)), [f"{f}\n{_budget(lf, budgets)}" for f, lf in cells])
    ax.set_xlabel("freeze, label budget")
    ax.set_ylabel(f"SimCLR − random, {metric_label}")
    ax.set_title("Paired differences by seed (same labels, crops and decoder start)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def sweep_state(parent_run_id: str, finished: int, tracking_uri: str | None = None) -> str:
    """How far the sweep is: ``12 of 54 cells finished; ... provisional`` while it runs (or when it
    stopped short), ``54 of 54 cells finished`` once done. Cells recorded as skipped (the ImageNet
    arm offline) are not counted as cells to finish; more finished cells than the last plan lists (a
    narrower grid run last) are said to be so, not "4 of 2"."""
    run = Run.attach(parent_run_id, tracking_uri).get()
    status, tags = run.info.status, run.data.tags
    skipped = sum(1 for r in child_runs(parent_run_id, tracking_uri)
                  if r.info.status == "FINISHED" and r.data.tags.get("skipped") == "true")
    total = int(tags["cells_total"]) - skipped if tags.get("cells_total") else None
    if total is None:
        text = f"{finished} cells finished"
    elif finished > total:   # the sweep was last run with another grid: the children of the earlier one stand
        text = f"{finished} cells finished ({total} in the sweep's last plan, the others from an earlier grid)"
    else:
        text = f"{finished} of {total} cells finished"
    if skipped:
        text += f" ({skipped} more recorded as skipped)"
    failed = int(tags.get("cells_failed") or 0)   # the last plan's failures, whatever older cells stand
    if failed:
        text += f"; {failed} cell(s) of the last plan failed"
    if status == "RUNNING" or failed or (total is not None and finished < total):
        text += "; the sweep is still running or was stopped part-way, so every number here is provisional"
    return text


def cell_machines(parent_run_id: str, tracking_uri: str | None = None) -> str:
    """Where the finished cells trained, by their ``histoclr.machine`` tag (a cell restored from its
    record keeps it), and how many were restored from records rather than trained in this store."""
    runs = [r for r in child_runs(parent_run_id, tracking_uri)
            if r.info.status == "FINISHED" and r.data.tags.get("skipped") != "true"]
    if not runs:
        return ""
    machines = Counter(r.data.tags.get(MACHINE_TAG, "a machine not recorded") for r in runs)
    text = "Cells trained on " + "; ".join(f"{m}: {n}" for m, n in sorted(machines.items(), key=lambda mn: (-mn[1], mn[0]))) + "."
    restored = sum(RESTORED_TAG in r.data.tags for r in runs)
    if restored:
        text += (f" {restored} of the {len(runs)} were trained in earlier sessions and restored into this MLflow "
                 "store from their records in git (the sweep's `records_dir`).")
    return text


def pretraining_step(init: str) -> int | None:
    """0 for random init, the step of a ``simclr:...backbone_stepNNNNNN.pt`` snapshot, else None."""
    if init == "random":
        return 0
    m = re.search(r"step0*(\d+)", Path(init.split(":", 1)[1]).stem) if init.startswith("simclr:") else None
    return int(m.group(1)) if m else None


def snapshot_curve(runs, metric: str = "val_aji"):
    """Mean, std and count over seeds of ``metric`` per (freeze, label_fraction, pretraining step);
    step 0 is random init. Inits without a step (ImageNet, a run id) are left out."""
    import pandas as pd

    df = runs.assign(step=[pretraining_step(str(i)) for i in runs["init"]]).dropna(subset=["step", metric])
    if df.empty:
        return pd.DataFrame(columns=["freeze", "label_fraction", "step", "mean", "std", "n"])
    out = df.groupby(["freeze", "label_fraction", "step"])[metric].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n"}).astype({"step": int})


def curve_shape(curve, tolerance: float = 0.01) -> dict[tuple[str, float], str]:
    """Per (freeze, label_fraction): ``rising`` / ``flat`` / ``falling``, the last snapshot's mean
    against the first snapshot's (random init not counted), ``flat`` within ``tolerance``."""
    shapes = {}
    for (freeze, lf), d in curve[curve["step"] > 0].groupby(["freeze", "label_fraction"]):
        d = d.sort_values("step")
        if len(d) < 2:
            continue
        delta = d["mean"].iloc[-1] - d["mean"].iloc[0]
        shapes[freeze, lf] = "flat" if abs(delta) <= tolerance else ("rising" if delta > 0 else "falling")
    return shapes


def plot_snapshot_curve(curve, path: Path, metric_label: str = "val AJI",
                        budgets: dict[float, str] | None = None) -> Path:
    """One line per (freeze, budget): mean ± std over seeds against the pretraining step (0 = random)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from histoclr.io import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (freeze, lf), d in curve.groupby(["freeze", "label_fraction"], sort=True):
        d = d.sort_values("step")
        ax.errorbar(d["step"], d["mean"], yerr=d["std"].fillna(0), marker="o", capsize=3,
                    label=f"freeze {freeze}, labels {_budget(lf, budgets)}")
    ax.set_xlabel("SimCLR pretraining step of the encoder's start (0 = random init)")
    ax.set_ylabel(metric_label)
    ax.set_title("Fine-tuned result against pretraining length (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def target_verdict(diffs, last_init: str, scarce=(0.1, 0.2), margin: float = 0.03,
                   seeds_expected: int | None = None, budgets: dict[float, str] | None = None) -> list[str]:
    """The SSL issue's target on the paired AJI differences ``diffs`` (:func:`paired_differences`):
    at the ``scarce`` budgets (label fractions), full and layer1-2 fine-tuning from ``last_init``
    >= random + ``margin`` AJI with every seed positive; the frozen encoder (``all``) no worse than
    random frozen. One line per checked cell, saying met or missed and by how much; a cell with
    fewer paired seeds than ``seeds_expected`` (a sweep still running) is marked provisional."""
    lines = []
    d = diffs[diffs["init"] == last_init]
    for _, r in d.sort_values(["freeze", "label_fraction"]).iterrows():
        cell = f"freeze {r['freeze']}, labels {_budget(r['label_fraction'], budgets)}"
        seeds = f"{int(r['positive'])}/{int(r['n'])} seeds positive"
        if r["freeze"] == "all":
            ok = r["mean"] >= 0
            lines.append(f"- frozen probe, {cell}: SimCLR − random {r['mean']:+.3f} AJI ({seeds}): "
                         + ("met (no worse than random frozen)" if ok else f"missed by {-r['mean']:.3f}"))
        elif any(abs(r["label_fraction"] - f) < 1e-9 for f in scarce):
            ok = r["mean"] >= margin and r["positive"] == r["n"]
            short = max(0.0, margin - r["mean"])
            lines.append(f"- {cell}: SimCLR − random {r['mean']:+.3f} AJI ({seeds}; target ≥ +{margin:.2f}, "
                         "every seed positive): " + ("met" if ok else (f"missed by {short:.3f}" if short > 0
                                                                        else "missed (not every seed positive)")))
        else:
            continue
        if seeds_expected and int(r["n"]) < seeds_expected:
            lines[-1] += f" (provisional: {int(r['n'])} of {seeds_expected} seeds finished)"
    return lines


def expected_seeds(parent_run_id: str, tracking_uri: str | None = None) -> int | None:
    """How many seeds the sweep's config asks for (its parent run's ``seeds`` param), else None."""
    import ast

    raw = Run.attach(parent_run_id, tracking_uri).get().data.params.get("seeds")
    try:
        return len(ast.literal_eval(raw)) if raw else None
    except (ValueError, SyntaxError, TypeError):
        return None


def _budget(label_fraction: float, budgets: dict[float, str] | None) -> str:
    return (budgets or {}).get(float(label_fraction)) or budget_label(float(label_fraction))


def _short(init: str) -> str:
    return Path(init.split(":", 1)[1]).stem if init.startswith("simclr:") else init


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except HistoclrError as e:  # no finished cells yet, unknown experiment, ...: one line, no traceback
        raise SystemExit(f"error: {e}") from None


def _main(argv: list[str] | None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="histoclr-ablation")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--out", default="runs/ablation_report")
    ap.add_argument("--command", default="histoclr ablate configs/ablation/cpu.yaml",
                    help="the sweep's exact command, quoted in the section")
    ap.add_argument("--note", default="", help="a paragraph on what the numbers say")
    ap.add_argument("--no-doc", action="store_true", help="print only; do not write docs/results.md")
    ap.add_argument("--section", default=SECTION, help="the docs/results.md section to write")
    ap.add_argument("--img", default="ablation_cpu", help="folder under docs/img/ for the plots")
    args = ap.parse_args(argv)

    rep = build_report(args.out, experiment=args.experiment, tracking_uri=args.tracking_uri)
    runs = rep.runs
    budgets = budget_labels(runs)
    lines, wins, cells = [], 0, 0
    for metric, name in (("val_aji", "AJI"), ("val_pq", "PQ"), ("best_val_dice", "Dice")):
        diffs = paired_differences(runs, metric)
        lines += ["", (f"| SimCLR init | freeze | labels | seeds | SimCLR − random, val {name}: mean | min | max | "
                      "seeds positive |"), "|---|---|---|---|---:|---:|---:|---:|"]
        for _, r in diffs.iterrows():
            lines.append(f"| {_short(r['init'])} | {r['freeze']} | {_budget(r['label_fraction'], budgets)} | {int(r['n'])} | "
                         f"{r['mean']:+.3f} | {r['min']:+.3f} | {r['max']:+.3f} | {int(r['positive'])}/{int(r['n'])} |")
        if metric == "val_aji":
            wins, cells = (int((diffs["mean"] > 0).sum()), len(diffs)) if len(diffs) else (0, 0)
    table = rep.files[2].read_text()
    curve = snapshot_curve(runs, "val_aji")
    snapshots = sorted({str(i) for i in runs["init"] if (pretraining_step(str(i)) or 0) > 0},
                       key=lambda i: pretraining_step(i))
    curve_lines = []
    if snapshots:
        aji = paired_differences(runs, "val_aji")
        curve_lines = ["", f"Target (last snapshot, {_short(snapshots[-1])}, against random init, paired by seed):",
                       *target_verdict(aji, snapshots[-1],
                                       seeds_expected=expected_seeds(rep.parent_run_id, args.tracking_uri),
                                       budgets=budgets)]
        shapes = curve_shape(curve)
        if shapes:
            curve_lines += ["", "Curve over snapshots (mean val AJI, last snapshot against the first, flat within "
                                "±0.01): " + "; ".join(f"freeze {f}, labels {_budget(lf, budgets)}: {shape}"
                                                      for (f, lf), shape in sorted(shapes.items())) + "."]
    print(table)
    print("\n".join(lines + curve_lines))
    print(f"SimCLR ahead of random on mean val AJI in {wins} of {cells} init x freeze x budget cells")
    if args.no_doc:
        return

    img = REPO / "docs" / "img" / args.img
    img.mkdir(parents=True, exist_ok=True)
    atomic_copy(rep.files[0], img / "cells.csv")   # every cell's numbers stay in git; runs/ and the store need not
    pics = []
    for f in rep.files[3:]:
        atomic_copy(f, img / f.name)
        pics.append(f"![{f.stem}](img/{args.img}/{f.name})")
    if snapshots:
        plot_snapshot_curve(curve, img / "aji_vs_pretraining_step.png", budgets=budgets)
        pics.append(f"![aji_vs_pretraining_step](img/{args.img}/aji_vs_pretraining_step.png)")
    by_seed = paired_by_seed(runs, "val_aji")
    if len(by_seed):
        plot_paired_by_seed(by_seed, img / "aji_paired_by_seed.png", budgets=budgets)
        pics.append(f"![aji_paired_by_seed](img/{args.img}/aji_paired_by_seed.png)")
    n_cells = len(runs)
    total_min = runs["train_time_s"].sum() / 60
    params = Run.attach(rep.parent_run_id, args.tracking_uri).get().data.params
    imagenet = ("; the `imagenet` arm is recorded as skipped (no weights offline)"
                if "imagenet" in params.get("inits", "") else "")
    machines = cell_machines(rep.parent_run_id, args.tracking_uri)
    body = [
        (f"Sweep `{args.experiment}`, parent run `{rep.parent_run_id}`: "
         f"{sweep_state(rep.parent_run_id, n_cells, args.tracking_uri)}. {n_cells} finished fine-tuning runs "
         f"({total_min:.0f} min of training and validation in all), each one MLflow child run{imagenet}. "
         f"{machines + ' ' if machines else ''}Validation: the fixed 3 images; label pool: the "
         "other 10 (the subsets are nested and drawn per seed). Each cell's best epoch is chosen by "
         "validation AJI on these same validation images (the same, slightly optimistic, rule for every "
         "arm) and its post-processing on its own training images; `best_val_dice` is that epoch's Dice. "
         "Mean ± std over seeds:"), "",
        table.rstrip(), "",
        "Paired by seed (same label subset, crops and decoder initialisation; only the encoder's start differs):",
        *lines, "", *(by_seed_table(by_seed, budgets=budgets) if len(by_seed) else []), "",
        f"SimCLR is ahead of random init on mean val AJI in {wins} of {cells} init x freeze x budget cells.",
        *curve_lines,
    ]
    if args.note:
        body += ["", args.note]
    body += ["", (f"Every cell, one row per MLflow child run (run id, init, freeze, budget, seed and its "
                  f"results): [cells.csv](img/{args.img}/cells.csv)."), "", *pics]
    write_section(args.section, "\n".join(body), args.command, doc=RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
