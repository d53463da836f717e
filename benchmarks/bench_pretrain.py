"""Throughput of `histoclr pretrain` on real tiles against model-only steps on pre-made tensors.

Both runs go through the same :class:`SimCLRTrainer` with the same config (default
``configs/pretrain/cpu.yaml``): the first on the real tile dataset (PNG decoding + histology
views in DataLoader workers, exactly what `histoclr pretrain` builds), the second on a dataset of
pre-made view tensors with no workers (the model's ceiling). Every batch's wait on the DataLoader
is timed in the same run, so the table shows the share of step time spent waiting for data.
The first ``--skip`` steps (worker start-up, allocator warm-up) are left out. MLflow and the
held-out checks are off (they run once per run, not per step).

    .venv/bin/python benchmarks/bench_pretrain.py --manifests /tmp/tiles_monuseg /tmp/tiles_svs

``--dense-vs-tiles``: the cost of dense sampling (``data.mode=dense``, a new random tissue crop
read from the slides for every item) against fixed tiles of the same size and resolution
(``data.mode=tiles``, PNG tiles cut by `histoclr tile` from the same slides), interleaved in
the same process with the same model and views; the ratio of their step times goes to its own
section of docs/benchmarks.md:

    histoclr tile ../shared/data/monuseg2018/unlabeled/images ../shared/data/monuseg2018/labeled/images \
        ../shared/data/slides --mpp 0.25 --assume-mpp 0.2527 --tile-size 120 --out /tmp/tiles_dense_bench
    .venv/bin/python benchmarks/bench_pretrain.py --dense-vs-tiles --manifests /tmp/tiles_dense_bench
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from histoclr.docs_sections import RESULTS, write_section
from histoclr.io import atomic_path, atomic_write_bytes
from histoclr.progress import TimedLoader

REPO = Path(__file__).resolve().parents[1]


def _doc_picture(src: Path, images_dir: Path, max_side: int = 1000, max_png_bytes: int = 200_000) -> Path:
    """Copy a run picture into docs/img: small plots as PNG, large photo-like montages as JPEG."""
    from PIL import Image

    if src.stat().st_size <= max_png_bytes:
        dst = images_dir / src.name
        atomic_write_bytes(dst, src.read_bytes())
        return dst
    dst = images_dir / (src.stem + ".jpg")
    im = Image.open(src).convert("RGB")
    im.thumbnail((max_side, max_side), Image.LANCZOS)
    with atomic_path(dst) as tmp:
        im.save(tmp, format="JPEG", quality=85, optimize=True)
    return dst


def _trainer_class():
    from histoclr.ssl.trainer import SimCLRTrainer

    class TimedTrainer(SimCLRTrainer):
        def _build_loader(self, sampler, device):
            self.timed = TimedLoader(super()._build_loader(sampler, device))
            return self.timed

    return TimedTrainer


class PremadeViews(torch.utils.data.Dataset):
    """``n`` items of two fixed ``(3, S, S)`` tensors (no decoding, no augmentation)."""

    def __init__(self, n: int, size: int):
        g = torch.Generator().manual_seed(0)
        self.bank = torch.randn(16, 3, size, size, generator=g)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return [self.bank[i % 16], self.bank[(i + 1) % 16]]


def measure(cfg, dataset, skip: int) -> dict:
    trainer = _trainer_class()(cfg, dataset)
    t0 = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - t0
    timed = trainer.timed
    stamps, waits = timed.stamps, timed.waits
    steps = len(stamps) - 1 - skip
    if steps < 1:
        raise SystemExit(f"need more than {skip + 1} steps, got {len(stamps)}")
    span = stamps[-1] - stamps[skip]
    wait = sum(waits[skip + 1:])
    images = 2 * cfg.train.batch_size * steps
    return {"img_s": images / span, "s_step": span / steps, "wait_share": wait / span,
            "steps": steps, "wall": wall}


def report_run(run_dir: Path, command: str, note: str = "",
               images_dir: Path = REPO / "docs" / "img" / "pretrain_cpu") -> Path:
    """Write the docs/results.md section of a finished `histoclr pretrain` run in ``run_dir``.

    Reads the run's config, diagnostics and MLflow run (loss history, timings), copies its
    pictures to ``images_dir`` and links them.
    """
    import json
    import os

    import yaml
    from mlflow.tracking import MlflowClient

    from histoclr.ssl.trainer import load_checkpoint
    from histoclr.tracking import resolve_tracking_uri

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    diag = json.loads((run_dir / "diagnostics" / "diagnostics.json").read_text())
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    client = MlflowClient(resolve_tracking_uri(cfg["tracking"]["tracking_uri"]))
    run = client.get_run(ckpt["run_id"])
    m, p = run.data.metrics, run.data.params
    loss = sorted((h.step, h.value) for h in client.get_metric_history(run.info.run_id, "loss"))
    wall = (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else float("nan")
    pics = []
    sources = [run_dir / "diagnostics" / n for n in ("loss_curve.png", "embedding_map.png", "neighbours.png")]
    for src in [*sources, run_dir / "views_preview.png"]:
        pics.append(os.path.relpath(_doc_picture(src, images_dir), RESULTS.parent))
    t, mo = cfg["train"], cfg["model"]
    hold = diag.get("holdout_slide_ids", [])
    body = [
        (f"{mo['arch']} SimCLR, {cfg['views']['image_size']} px `histology` views of 224 px tiles at 0.5 um/px, "
        f"batch {t['batch_size']} ({2 * t['batch_size']} images/step), {t['max_steps']} steps, "
        f"{cfg['optim']['name']} lr {cfg['optim']['lr']}, temperature {cfg['loss']['temperature']}. "
        f"Training tiles: {p.get('data.train_tiles')} from {p.get('data.train_slides')} slides; held out "
        f"(by slide): {int(m.get('holdout_tiles', 0))} tiles from {len(hold)} slides ({', '.join(hold)})."), "",
        (f"- Wall time (MLflow run start to end, incl. held-out checks): {wall / 60:.1f} min; training "
        f"{m['final_train_time_s'] / 60:.1f} min at **{m['final_images_per_s_mean']:.1f} images/s** "
        "(two views count as two images), on the 2-core CPU of these machines (idle for the first 5 min, then shared with test runs)."),
        (f"- NT-Xent loss (batch): {loss[0][1]:.3f} at step {loss[0][0]} -> {loss[-1][1]:.3f} at step {loss[-1][0]} "
        f"(log(2B-1) = {math.log(2 * t['batch_size'] - 1):.3f} is chance)."),
        f"- Unreadable tiles skipped: {int(m.get('bad_tiles', 0))}.",
        f"- Backbone for `finetune-seg`: `{(run_dir / 'backbone.pt').resolve()}` (MLflow run `{run.info.run_id}`).", "",
        ("Held-out positive-pair ranking (two `histology` views of each held-out tile, encoder features, "
        f"eval mode; {2 * int(m.get('holdout_tiles', 0))} views, chance top-1 = "
        f"{1 / max(1, 2 * int(m.get('holdout_tiles', 0)) - 1):.3f}):"), "",
        "| encoder | top-1 | top-5 | mean rank | nearest neighbour from the same slide |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, suffix in ((f"SimCLR (step {diag['step']})", ""), ("random init", "_random")):
        body.append(f"| {label} | {m['holdout_top1' + suffix]:.3f} | {m['holdout_top5' + suffix]:.3f} | "
                    f"{m['holdout_mean_rank' + suffix]:.2f} | {m['holdout_nn_same_slide' + suffix]:.2f} |")
    if note:
        body += ["", note]
    body += ["", *[f"![{Path(x).stem}]({x})" for x in pics]]
    return write_section("SimCLR pretraining on MoNuSeg + CMU-1 (CPU)", "\n".join(body), command, doc=RESULTS)


def _rates(runs: list[dict]) -> str:
    return ", ".join(f"{r['img_s']:.1f}" for r in runs)


def data_cpu_per_item(dataset, n: int, seed: int = 0) -> float:
    """CPU seconds of this process per item of ``dataset`` through the trainer's seeded path
    (read + decode + two views), after ``n`` untimed warm-up items (readers opened, caches warm).

    Process CPU time does not count other processes' work, so it is a fair measure on a shared
    machine; it is the CPU a DataLoader worker spends, which on 2 cores the model does not get.
    """
    from histoclr.ssl.trainer import SeededDataset, sample_seed

    ds = SeededDataset(dataset)
    keys = [(i % len(dataset), sample_seed(seed, 0, i % len(dataset))) for i in range(2 * n)]
    for key in keys[n:]:
        ds[key]
    t0 = time.process_time()
    for key in keys[:n]:
        ds[key]
    return (time.process_time() - t0) / n


def dense_vs_tiles(args, note: str = "") -> Path:
    """Time the dense and the fixed-tile data paths (interleaved runs); write their section."""
    from histoclr.config.loader import load_config
    from histoclr.config.pretrain import PretrainConfig
    from histoclr.pretrain.run import prepare_data

    with tempfile.TemporaryDirectory() as tmp:
        base = [f"train.max_steps={args.steps}", "train.checkpoint_every=0", "tracking.enabled=false",
                "diagnostics.enabled=false", "snapshots.steps=[]", f"out_dir={tmp}/run", *args.overrides]
        dense_cfg = load_config(PretrainConfig, args.config, base + ["data.mode=dense"])
        tiles_cfg = load_config(PretrainConfig, args.config, base + [
            "data.mode=tiles", f"data.manifests=[{','.join(args.manifests)}]"])
        dense, tiles = prepare_data(dense_cfg), prepare_data(tiles_cfg)
        print(f"dense: {dense.describe()}\ntiles: {tiles.describe()}", flush=True)
        cpu: dict[str, list[float]] = {"tiles": [], "dense": []}
        for rep in range(3):                   # the data path alone, in process CPU time
            for name, data in (("tiles", tiles), ("dense", dense)):
                cpu[name].append(data_cpu_per_item(data.train, args.items, seed=rep))
                print(f"{name} data path: {1000 * cpu[name][-1]:.2f} CPU ms/item", flush=True)
        runs: dict[str, list[dict]] = {"tiles": [], "dense": []}
        for rep in range(args.repeats):        # interleaved, so a load change hits both alike
            for name, cfg, data in (("tiles", tiles_cfg, tiles), ("dense", dense_cfg, dense)):
                runs[name].append(measure(cfg, data.train, args.skip))
                print(f"{name} #{rep + 1}: {runs[name][-1]}", flush=True)
    best = {k: max(v, key=lambda r: r["img_s"]) for k, v in runs.items()}
    ratio = best["dense"]["s_step"] / best["tiles"]["s_step"]
    item = {k: min(v) for k, v in cpu.items()}
    d, t, v = dense_cfg.data.dense, dense_cfg.train, dense_cfg.views
    tile_size = load_tile_size(args.manifests)
    body = [(f"{dense_cfg.model.arch} SimCLR, {v.image_size} px `{v.recipe}` views, batch {t.batch_size} "
             f"(= {2 * t.batch_size} images/step), {t.num_workers} DataLoader workers, precision {t.precision}, "
             f"{torch.get_num_threads()} torch threads; {best['dense']['steps']} timed steps per run after "
             f"{args.skip} warm-up steps; best of {args.repeats} interleaved runs each (all runs: tiles "
             f"{_rates(runs['tiles'])}, dense {_rates(runs['dense'])} images/s). Both paths feed "
             f"{d.crop_size} px images at {d.mpp} um/px to the same views: the tiles are "
             f"{len(tiles.train)} PNG tiles of {tile_size} px cut by `histoclr tile` from the same slides, "
             f"the dense crops are read from {len(dense.train_slides)} slides/images held open in each worker."),
            "", "| data path | images/s | s/step | data wait share | data CPU per step (s) |",
            "|---|---:|---:|---:|---:|"]
    for name, label in (("tiles", "fixed tiles (`data.mode=tiles`, PNG decode)"),
                        ("dense", "dense crops (`data.mode=dense`, read from the slides)")):
        r = best[name]
        body.append(f"| {label} | {r['img_s']:.1f} | {r['s_step']:.2f} | {100 * r['wait_share']:.1f}% | "
                    f"{item[name] * t.batch_size:.3f} |")
    verdict = "within" if ratio <= 1.10 else "**outside**"
    cpu_ratio = item["dense"] / item["tiles"]
    body += ["", (f"Step time dense / fixed tiles: **{ratio:.2f}x** ({100 * (ratio - 1):+.0f}%), {verdict} the "
                  "target of at most +10%. "
                  f"Data path alone (read + decode + two views per item, process CPU time, best of 3 "
                  f"interleaved runs of {args.items} items): {1000 * item['tiles']:.2f} ms/item for tiles, "
                  f"{1000 * item['dense']:.2f} ms/item dense (**{cpu_ratio:.2f}x**); per step that is "
                  f"{100 * item['dense'] * t.batch_size / best['dense']['s_step']:.1f}% (dense) and "
                  f"{100 * item['tiles'] * t.batch_size / best['tiles']['s_step']:.1f}% (tiles) of the step time."), ""]
    if note:
        body.append(note)
    cmd = "python benchmarks/bench_pretrain.py --dense-vs-tiles " + " ".join(
        ["--manifests", *args.manifests, "--steps", str(args.steps), "--skip", str(args.skip),
         "--repeats", str(args.repeats), "--items", str(args.items)]
        + ([f"--config {args.config}"] if args.config != str(REPO / "configs" / "pretrain" / "cpu.yaml") else [])
        + args.overrides)
    path = write_section("Dense sampling vs fixed tiles (pretraining, CPU)", "\n".join(body), cmd)
    print(f"dense / tiles step time: {ratio:.3f}x; wrote {path}")
    return path


def load_tile_size(manifests) -> int:
    """The ``out_size`` of the first tile manifest's tiles."""
    from histoclr.pretrain.dataset import load_tiles

    return int(load_tiles(manifests[:1])["out_size"].iloc[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report-run", type=Path, default=None,
                    help="instead of benchmarking: write docs/results.md's section for this finished run folder")
    ap.add_argument("--run-command", default="", help="with --report-run: the exact commands of the run")
    ap.add_argument("--note", default="", help="with --report-run / --dense-vs-tiles: a paragraph on how to read the numbers")
    ap.add_argument("--manifests", nargs="+", help="tiles.csv files or folders")
    ap.add_argument("--dense-vs-tiles", action="store_true",
                    help="time data.mode=dense against data.mode=tiles (the --manifests) instead")
    ap.add_argument("--items", type=int, default=128,
                    help="with --dense-vs-tiles: items per data-path-alone measurement")
    ap.add_argument("--config", default=str(REPO / "configs" / "pretrain" / "cpu.yaml"))
    ap.add_argument("--steps", type=int, default=8, help="training steps per run")
    ap.add_argument("--skip", type=int, default=2, help="first steps left out of the timing")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs of each; the fastest is reported")
    ap.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = ap.parse_args()
    if args.report_run is not None:
        print(report_run(args.report_run, args.run_command, args.note))
        return
    if not args.manifests:
        ap.error("--manifests is required")
    if args.dense_vs_tiles:
        dense_vs_tiles(args, args.note)
        return

    from histoclr.config.loader import load_config
    from histoclr.config.pretrain import PretrainConfig
    from histoclr.pretrain.run import prepare_data

    with tempfile.TemporaryDirectory() as tmp:
        base = [f"data.manifests=[{','.join(args.manifests)}]", f"train.max_steps={args.steps}",
                "train.checkpoint_every=0", "tracking.enabled=false", "diagnostics.enabled=false",
                f"out_dir={tmp}/run", *args.overrides]
        cfg = load_config(PretrainConfig, args.config, base)
        data = prepare_data(cfg)
        print(f"pipeline: {data.describe()}", flush=True)
        model_cfg = load_config(PretrainConfig, args.config, base + ["train.num_workers=0"])
        premade = PremadeViews(len(data.train), cfg.views.image_size)
        reals, models = [], []
        for rep in range(args.repeats):        # interleaved, so a load change hits both alike
            reals.append(measure(cfg, data.train, args.skip))
            print(f"pipeline #{rep + 1}: {reals[-1]}", flush=True)
            models.append(measure(model_cfg, premade, args.skip))
            print(f"model only #{rep + 1}: {models[-1]}", flush=True)
        real = max(reals, key=lambda r: r["img_s"])
        model_only = max(models, key=lambda r: r["img_s"])

    t = cfg.train
    rows = [(("`histoclr pretrain` data path (real PNG tiles, histology views, "
             f"{t.num_workers} workers)"), real),
            ("model only (pre-made tensors, no workers)", model_only)]
    body = [(f"{cfg.model.arch} SimCLR, {cfg.views.image_size} px views, batch {t.batch_size} "
            f"(= {2 * t.batch_size} images/step), precision {t.precision}, {torch.get_num_threads()} "
            f"torch threads; {real['steps']} timed steps per run after {args.skip} warm-up steps; best of "
             f"{args.repeats} interleaved runs each (all runs: pipeline "
             f"{_rates(reals)}, model only {_rates(models)} images/s)."), "",
            "| run | images/s | s/step | data wait share |", "|---|---:|---:|---:|"]
    for name, r in rows:
        body.append(f"| {name} | {r['img_s']:.1f} | {r['s_step']:.2f} | {100 * r['wait_share']:.1f}% |")
    body += ["", (f"Ratio pipeline / model-only: **{real['img_s'] / model_only['img_s']:.2f}x** "
             f"(1.0 = data loading fully hidden behind compute)."), "",
             ("The data wait share is measured inside each run: the time the training loop blocks on "
              "the DataLoader. The gap between the two rows is larger than that share because on this "
              "2-core machine the DataLoader workers (PNG decoding, HEStain and the other view "
              "transforms) take CPU time from the model's compute threads even when a batch is always "
              "ready; with spare cores (the GPU config runs 12 workers on 16 cores) that cost is hidden. "
              "The CPU was shared with other engineers' jobs, so absolute numbers vary with their load; "
              "the runs are interleaved and the fastest of each is reported."), "",
             ("GPU target (1,500 images/s for ResNet-50 at 224 px on one H100, bf16, "
              "`configs/pretrain/gpu_resnet50.yaml`): **unmeasured** (no GPU was available).")]
    cmd = "python benchmarks/bench_pretrain.py " + " ".join(
        ["--manifests", *args.manifests, "--steps", str(args.steps), "--skip", str(args.skip),
         "--repeats", str(args.repeats)]
        + ([f"--config {args.config}"] if args.config != ap.get_default("config") else []) + args.overrides)
    print(write_section("histoclr pretrain throughput (CPU)", "\n".join(body), cmd))


if __name__ == "__main__":
    main()
