"""Write the ablation's section of docs/results.md from a finished (or partly finished) sweep.

Runs `histoclr report` on the sweep (tables + plots, logged on its parent run), copies the plots to
docs/img/ablation_cpu/, adds the paired comparison the question needs (SimCLR minus random init,
same freeze / budget / seed, so the label subset and crops are the same) and writes the section
"Ablation: SimCLR vs random init x freezing x label budget (CPU)" with the exact commands.

    python pipelines/ablation_results.py --tracking-uri sqlite:////work/main/mlflow.db \
        --command "histoclr ablate configs/ablation/cpu.yaml" --note "How to read it: ..."
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from histoclr.ablation.report import build_report
from histoclr.docs_sections import RESULTS, write_section

REPO = Path(__file__).resolve().parents[2]
SECTION = "Ablation: SimCLR vs random init x freezing x label budget (CPU)"


def paired_differences(runs, metric: str = "val_aji"):
    """Per (SimCLR init, freeze, label_fraction): mean, min, max and the count of positive differences
    over seeds of that init minus random init on ``metric`` (same freeze, budget and seed)."""
    import pandas as pd

    wide = runs.pivot_table(index=["freeze", "label_fraction", "seed"], columns="init", values=metric)
    if "random" not in wide.columns:
        return pd.DataFrame()
    out = []
    for init in [c for c in wide.columns if str(c).startswith("simclr:")]:
        diff = (wide[init] - wide["random"]).dropna().rename("diff").reset_index()
        for (freeze, lf), d in diff.groupby(["freeze", "label_fraction"])["diff"]:
            out.append({"init": init, "freeze": freeze, "label_fraction": lf, "mean": d.mean(), "min": d.min(),
                        "max": d.max(), "positive": int((d > 0).sum()), "n": int(d.size)})
    return pd.DataFrame(out)


def _short(init: str) -> str:
    return Path(init.split(":", 1)[1]).stem if init.startswith("simclr:") else init


def main(argv: list[str] | None = None) -> None:
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
    lines, wins, cells = [], 0, 0
    for metric, name in (("val_aji", "AJI"), ("val_pq", "PQ"), ("best_val_dice", "Dice")):
        diffs = paired_differences(runs, metric)
        lines += ["", f"| SimCLR init | freeze | labels | seeds | SimCLR − random, val {name}: mean | min | max | "
                      "seeds positive |", "|---|---|---|---|---:|---:|---:|---:|"]
        for _, r in diffs.iterrows():
            lines.append(f"| {_short(r['init'])} | {r['freeze']} | {r['label_fraction']:.0%} | {int(r['n'])} | "
                         f"{r['mean']:+.3f} | {r['min']:+.3f} | {r['max']:+.3f} | {int(r['positive'])}/{int(r['n'])} |")
        if metric == "val_aji":
            wins, cells = (int((diffs["mean"] > 0).sum()), len(diffs)) if len(diffs) else (0, 0)
    table = rep.files[2].read_text()
    print(table)
    print("\n".join(lines))
    print(f"SimCLR ahead of random on mean val AJI in {wins} of {cells} init x freeze x budget cells")
    if args.no_doc:
        return

    img = REPO / "docs" / "img" / args.img
    img.mkdir(parents=True, exist_ok=True)
    pics = []
    for f in rep.files[3:]:
        shutil.copyfile(f, img / f.name)
        pics.append(f"![{f.stem}](img/{args.img}/{f.name})")
    n_cells = len(runs)
    total_min = runs["train_time_s"].sum() / 60
    body = [
        (f"Sweep `{args.experiment}`, parent run `{rep.parent_run_id}`: {n_cells} finished fine-tuning runs "
         f"({total_min:.0f} min of training and validation in all), each one MLflow child run; the `imagenet` "
         "arm is recorded as skipped (no weights offline). Validation: the fixed 3 images; label pool: the "
         "other 10 (the subsets are nested and drawn per seed). Each cell's best epoch is chosen by "
         "validation AJI on these same validation images (the same, slightly optimistic, rule for every "
         "arm) and its post-processing on its own training images; `best_val_dice` is that epoch's Dice. "
         "Mean ± std over seeds:"), "",
        table.rstrip(), "",
        "Paired by seed (same label subset, crops and decoder initialisation; only the encoder's start differs):",
        *lines, "",
        f"SimCLR is ahead of random init on mean val AJI in {wins} of {cells} init x freeze x budget cells.",
    ]
    if args.note:
        body += ["", args.note]
    body += ["", *pics]
    write_section(args.section, "\n".join(body), args.command, doc=RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
