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


def paired_differences(runs, metric: str = "best_val_dice"):
    """Per (freeze, label_fraction): mean, min and max over seeds of SimCLR minus random ``metric``."""
    import pandas as pd

    runs = runs.assign(arm=runs["init"].map(lambda s: "simclr" if s.startswith("simclr:") else s))
    wide = runs.pivot_table(index=["freeze", "label_fraction", "seed"], columns="arm", values=metric)
    if not {"simclr", "random"} <= set(wide.columns):
        return pd.DataFrame()
    diff = (wide["simclr"] - wide["random"]).dropna().rename("diff").reset_index()
    g = diff.groupby(["freeze", "label_fraction"])["diff"]
    return pd.DataFrame({"mean": g.mean(), "min": g.min(), "max": g.max(), "n": g.size()}).reset_index()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="histoclr-ablation")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--out", default="runs/ablation_report")
    ap.add_argument("--command", default="histoclr ablate configs/ablation/cpu.yaml",
                    help="the sweep's exact command, quoted in the section")
    ap.add_argument("--note", default="", help="a paragraph on what the numbers say")
    ap.add_argument("--no-doc", action="store_true", help="print only; do not write docs/results.md")
    args = ap.parse_args(argv)

    rep = build_report(args.out, experiment=args.experiment, tracking_uri=args.tracking_uri)
    runs = rep.runs
    diffs = paired_differences(runs)
    lines = ["| freeze | labels | seeds | SimCLR − random, val Dice: mean | min | max |", "|---|---|---|---:|---:|---:|"]
    for _, r in diffs.iterrows():
        lines.append(f"| {r['freeze']} | {r['label_fraction']:.0%} | {int(r['n'])} | {r['mean']:+.3f} | "
                     f"{r['min']:+.3f} | {r['max']:+.3f} |")
    wins = int((diffs["mean"] > 0).sum()) if len(diffs) else 0
    table = rep.files[2].read_text()
    print(table)
    print("\n".join(lines))
    print(f"SimCLR ahead of random (mean over seeds) in {wins} of {len(diffs)} freeze x budget cells")
    if args.no_doc:
        return

    img = REPO / "docs" / "img" / "ablation_cpu"
    img.mkdir(parents=True, exist_ok=True)
    pics = []
    for f in rep.files[3:]:
        shutil.copyfile(f, img / f.name)
        pics.append(f"![{f.stem}](img/ablation_cpu/{f.name})")
    n_cells = len(runs)
    total_min = runs["train_time_s"].sum() / 60
    body = [
        (f"Sweep `{args.experiment}`, parent run `{rep.parent_run_id}`: {n_cells} finished fine-tuning runs "
         f"({total_min:.0f} min of training and validation in all), each one MLflow child run; the `imagenet` "
         "arm is recorded as skipped (no weights offline). Validation: the fixed 3 images; label pool: the "
         "other 10 (25% = 2 images, 50% = 5, 100% = 10; the subsets are nested and drawn per seed). "
         "`best_val_dice` is the best epoch's whole-image Dice, chosen on these same validation images "
         "(the same, slightly optimistic, rule for every arm). Mean ± std over seeds:"), "",
        table.rstrip(), "",
        "Paired by seed (same label subset, crops and decoder initialisation; only the encoder's start differs):", "",
        *lines, "",
        f"SimCLR is ahead of random init on mean val Dice in {wins} of {len(diffs)} freeze x budget cells.",
    ]
    if args.note:
        body += ["", args.note]
    body += ["", *pics]
    write_section(SECTION, "\n".join(body), args.command, doc=RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
