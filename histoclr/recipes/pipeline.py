"""The whole histoclr pipeline on one data root: tile -> pretrain -> ablate -> report -> final model.

    python pipelines/run_all.py --config configs/pipeline/cpu.yaml [key=value ...]

Each stage is the `histoclr` command a user would type, run as its own process, and each one
resumes: re-running this recipe after an interruption skips finished slides, continues
pretraining from its last checkpoint, skips finished ablation cells and resumes the final model.
The final model is the product: the full fine-tuning config (``final_config``) on every labelled
image, from the ablation's best initialisation by mean validation AJI (``final_init: auto``; the
same rule for every arm), logged as the MLflow run ``final model`` tagged ``histoclr.final_model``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from histoclr.config import load_config
from histoclr.config.pipeline import PipelineConfig
from histoclr.docs_sections import RESULTS, write_section
from histoclr.errors import HistoclrError
from histoclr.recipes.demo import banner, demo_config, demo_wanted
from histoclr.tracking import Run, runs_link

REPO = Path(__file__).resolve().parents[2]


def stage(name: str, args: list[str], allow_fail: bool = False) -> float:
    """Run `histoclr ARGS`; return its wall time in seconds."""
    cmd = [sys.executable, "-m", "histoclr", *args]
    print(f"\n=== {name}: histoclr {shlex.join(args)}", flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd)
    dt = time.time() - t0
    print(f"=== {name}: exit {rc} after {dt / 60:.1f} min", flush=True)
    if rc != 0 and not allow_fail:
        raise SystemExit(f"pipeline stopped: stage '{name}' failed with exit code {rc}")
    return dt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs/pipeline/cpu.yaml"))
    ap.add_argument("--doc", action="store_true",
                    help="also write the stage times and the report table to docs/results.md")
    ap.add_argument("--demo", action="store_true",
                    help="run the built-in demo on synthetic data (configs/pipeline/demo.yaml; also data_root=demo)")
    ap.add_argument("--demo-if-missing", action="store_true",
                    help="run the built-in demo when data_root does not exist (what `make run` does by default)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ns = ap.parse_args(argv)
    try:
        cfg = load_config(PipelineConfig, ns.config, ns.overrides)
        demo = demo_wanted(cfg.data_root, ns.demo, ns.demo_if_missing)
        requested_root = cfg.data_root
        if demo:
            cfg = demo_config(ns.overrides, requested_root)
    except HistoclrError as e:
        raise SystemExit(f"error: {e}")
    root, out = Path(cfg.data_root), Path(cfg.out_dir)
    inputs = [str(root / s) for s in cfg.slides]
    missing = [p for p in inputs if not Path(p).exists()]
    if missing:
        raise SystemExit(f"error: not found under data_root: {', '.join(missing)}")
    tracking = ["--tracking-uri", cfg.tracking_uri] if cfg.tracking_uri else []
    times = {}

    # ---------------------------------------------------------------- 1. tiles
    tile_args = ["tile", *inputs, "--recursive", "--mpp", str(cfg.tile_mpp), "--tile-size", str(cfg.tile_size),
                 "--min-tissue", str(cfg.min_tissue), "--workers", str(cfg.workers), "--out", str(out / "tiles")]
    if cfg.assume_mpp:
        tile_args += ["--assume-mpp", str(cfg.assume_mpp)]
    # a bad slide does not stop the pipeline: the tiler records it and tiles the rest
    times["tile"] = stage("tile", tile_args, allow_fail=True)
    if not (out / "tiles" / "tiles.csv").is_file():
        raise SystemExit("pipeline stopped: tiling produced no manifest")

    # ---------------------------------------------------------------- 2. SimCLR pretraining
    pre_dir = out / "pretrain"
    times["pretrain"] = stage("pretrain", [
        "pretrain", "--config", cfg.pretrain_config, "--resume", "auto", *tracking,
        f"data.manifests=[{out / 'tiles' / 'tiles.csv'}]", f"out_dir={pre_dir}",
        # data.mode=dense reads the same data root, sources and validation exclusions as the rest
        f"data.dense.root={root}", f"data.dense.sources=[{','.join(cfg.slides)}]",
        f"data.dense.exclude_pairs={cfg.pairs}", f"data.dense.assume_mpp={cfg.assume_mpp or 'null'}",
        f"tracking.experiment={cfg.experiment}", *cfg.pretrain_overrides])

    # ---------------------------------------------------------------- 3. ablation
    times["ablate"] = stage("ablate", [
        "ablate", cfg.ablation_config, *tracking, f"experiment={cfg.experiment}",
        f"out_dir={out / 'ablation'}",
        f"inits=[random,imagenet,simclr:{pre_dir / 'backbone.pt'}]",
        f"finetune.pairs={cfg.pairs}", f"finetune.data_root={cfg.data_root}", *cfg.ablation_overrides],
        allow_fail=True)

    # ---------------------------------------------------------------- 4. report
    times["report"] = stage("report", ["report", "--experiment", cfg.experiment, "--out", str(out / "report"),
                                       *tracking])
    # ---------------------------------------------------------------- 5. the final model
    init = final_init(cfg.final_init, out / "report" / "summary.csv", pre_dir / "backbone.pt")
    final_dir = out / "final"
    times["final model"] = stage("final model", [
        "finetune-seg", "--config", cfg.final_config, *tracking, "--init", init, "--out", str(final_dir),
        f"pairs={cfg.pairs}", f"data_root={cfg.data_root}", f"tracking.experiment={cfg.experiment}",
        "tracking.run_name=final model", *cfg.final_overrides])
    metrics = json.loads((final_dir / "metrics.json").read_text())
    _tag_final(metrics["run_id"], cfg.tracking_uri)
    print("\nstage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()))
    try:
        link = runs_link(cfg.experiment, cfg.tracking_uri)
    except HistoclrError as e:            # the results stand; only the link is missing
        link = f"(no link: {e}); run `histoclr ui`"
    print(f"report: {out / 'report' / 'summary.md'}; compare the runs in the MLflow UI:\n{link}")
    print(f"final model: {final_dir / 'best.pt'} (init {init}; validation AJI {metrics['val_aji']:.3f}, "
          f"PQ {metrics['val_pq']:.3f}, Dice {metrics['best_val_dice']:.3f}; MLflow run {metrics['run_id']}, "
          f"'final model' in experiment {cfg.experiment})\n"
          f"use it: histoclr predict --model {final_dir / 'best.pt'} IMAGES... --out runs/predictions "
          "(its post-processing, chosen on the training images, is stored in the file)")
    if demo:
        print(banner(requested_root) + "(every MLflow run above is tagged demo=true; the report says "
              "the data is synthetic)", flush=True)
    elif ns.doc:
        write_doc(cfg, ns, times, out)


def final_init(choice: str, summary_csv: Path, backbone: Path) -> str:
    """The final model's ``--init``: ``auto`` picks the ablation arm with the best mean validation AJI
    (over its cells at the largest label budget); ``simclr`` is this pipeline's backbone."""
    if choice == "simclr":
        return f"simclr:{backbone}"
    if choice != "auto":
        return choice
    import pandas as pd

    if not summary_csv.is_file():
        print(f"final model: no ablation summary at {summary_csv}; starting from random init", flush=True)
        return "random"
    summary = pd.read_csv(summary_csv)
    top = summary[summary["label_fraction"] == summary["label_fraction"].max()]
    best = top.groupby("init")["val_aji_mean"].mean().idxmax()
    print(f"final model: init {best} (best mean validation AJI at {top['label_fraction'].max():.0%} of the labels)",
          flush=True)
    return best


def _tag_final(run_id: str | None, tracking_uri: str | None) -> None:
    if run_id:
        Run.attach(run_id, tracking_uri).set_tags({"histoclr.final_model": "true"})


def write_doc(cfg: PipelineConfig, ns, times: dict[str, float], out: Path) -> None:
    """The "whole pipeline in one command" section of docs/results.md (stage times + report table)."""
    rows = ["| stage | wall time (min) |", "|---|---:|"]
    rows += [f"| {k} | {v / 60:.1f} |" for k, v in times.items()]
    rows.append(f"| **total** | **{sum(times.values()) / 60:.1f}** |")
    summary = out / "report" / "summary.md"
    body = [f"Data root `{cfg.data_root}` ({', '.join(cfg.slides)}), config `{ns.config}`"
            + (f" with {' '.join(ns.overrides)}" if ns.overrides else "") + ":", "", *rows, "",
            "The report it ends with (`" + str(summary) + "`):", "",
            summary.read_text().rstrip() if summary.is_file() else "(no report)"]
    command = "make run RUN_ARGS=--doc   # = python pipelines/run_all.py --config configs/pipeline/cpu.yaml --doc"
    write_section("The whole pipeline in one command (make run)", "\n".join(body), command, doc=RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
