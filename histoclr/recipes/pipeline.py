"""The whole histoclr pipeline on one data root: tile -> pretrain -> ablate -> report.

    python pipelines/run_all.py --config configs/pipeline/cpu.yaml [key=value ...]

Each stage is the `histoclr` command a user would type, run as its own process, and each one
resumes: re-running this recipe after an interruption skips finished slides, continues
pretraining from its last checkpoint and skips finished ablation cells.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from histoclr.config import load_config
from histoclr.config.pipeline import PipelineConfig
from histoclr.docs_sections import RESULTS, write_section
from histoclr.errors import HistoclrError

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
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ns = ap.parse_args(argv)
    try:
        cfg = load_config(PipelineConfig, ns.config, ns.overrides)
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
    print("\nstage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()))
    print(f"report: {out / 'report' / 'summary.md'}; compare runs with `histoclr ui`")
    if ns.doc:
        write_doc(cfg, ns, times, out)


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
