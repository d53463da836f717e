"""The nucleus-instance result: boundary-aware targets against the binary target and the classical method.

    python pipelines/instance_result.py [--config configs/finetune/cpu.yaml] [--targets contour,distance,binary]
                                        [--out runs/instances] [--no-doc] [key=value ...]

Trains (or resumes, from ``<out>/<target>/last.pt``) the same fine-tuning configuration once per
target, each with its post-processing chosen on the training images, then scores on the validation
images, per image and mean (AJI, PQ, DQ, SQ, detection F1, Dice):

* every trained target with its own post-processing (the ``best.pt`` that ``histoclr predict`` uses);
* the ``binary`` target also with connected components instead of the watershed (its parameters
  chosen on the training images by the same search);
* haematoxylin-Otsu, as connected components and with the distance watershed
  (:func:`histoclr.seg.baseline.classical_references`).

Writes the section "Nucleus instances (CPU)" of docs/results.md and an overlay picture of one
validation image (truth / binary target / boundary-aware target) to docs/img/instances/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import numpy as np

from histoclr.config import load_config
from histoclr.config.seg import FinetuneConfig
from histoclr.docs_sections import RESULTS, write_section
from histoclr.io import atomic_path, atomic_write_json
from histoclr.seg.baseline import classical_references
from histoclr.seg.dataset import load_pair
from histoclr.seg.model import load_seg_checkpoint
from histoclr.seg.overlay import overlay_image
from histoclr.seg.postprocess import default_params
from histoclr.seg.train import evaluate, run_finetune, select_pairs, tune_postprocess

SECTION = "Nucleus instances (CPU)"
TARGET_AJI, TARGET_PQ, TARGET_DICE = 0.58, 0.50, 0.80
COLUMNS = ("aji", "pq", "dq", "sq", "f1", "dice")
IMG_DIR = RESULTS.parent / "img" / "instances"


def _mean(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in COLUMNS}


def _row(name: str, m: dict) -> str:
    return f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in COLUMNS) + " |"


def save_comparison(path: Path, image: np.ndarray, gt: np.ndarray, preds: list[tuple[str, np.ndarray]]) -> Path:
    """A JPEG of panels side by side: the truth's outlines, then each prediction's (green TP / red FP /
    blue missed pixels, yellow predicted outlines, cyan true outlines), labelled at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("truth", overlay_image(image, gt))] + [(name, overlay_image(image, p, gt)) for name, p in preds]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.6))
    for ax, (name, im) in zip(np.atleast_1d(axes), panels):
        ax.imshow(im)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="jpeg", pil_kwargs={"quality": 85})
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/finetune/cpu.yaml")
    ap.add_argument("--targets", default="contour,distance,binary")
    ap.add_argument("--out", default="runs/instances")
    ap.add_argument("--no-doc", action="store_true", help="Do not write docs/results.md or the picture.")
    ap.add_argument("overrides", nargs="*", help="FinetuneConfig key=value overrides, the same for every target")
    args = ap.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]

    rows, per_image, results, preds_by_name = [], {}, {}, {}
    cfg = None
    for target in targets:
        cfg = load_config(FinetuneConfig, args.config,
                          [*args.overrides, f"model.target={target}", f"out_dir={Path(args.out) / target}"])
        print(f"== {target}: training / resuming {cfg.out_dir}", flush=True)
        results[target] = run_finetune(cfg)
    chosen, val_pairs, _ = select_pairs(cfg)
    mpp, t = cfg.data.mpp, cfg.train
    val = [load_pair(p, mpp) for p in val_pairs]

    print("== scoring best.pt of every target on the validation images", flush=True)
    for target in targets:
        ckpt = load_seg_checkpoint(results[target]["checkpoint"])
        name = f"{target} target + {ckpt.postprocess.method}"
        _, preds, scores = evaluate(ckpt.model, val, ckpt.window, t.val_overlap, t.val_batch_size, "cpu",
                                    ckpt.postprocess)
        per_image[name], preds_by_name[name] = scores, preds
        if target == "binary":       # the same model without the watershed split, chosen the same way
            train = [load_pair(p, mpp) for p in chosen]
            comp, _ = tune_postprocess(ckpt.model, train, default_params("binary", method="components"),
                                       ckpt.window, t.val_overlap, t.val_batch_size, "cpu")
            _, preds, scores = evaluate(ckpt.model, val, ckpt.window, t.val_overlap, t.val_batch_size, "cpu", comp)
            per_image["binary target + components"], preds_by_name["binary target + components"] = scores, preds

    t0 = time.time()
    refs = classical_references(chosen, val_pairs, mpp)
    print(f"classical references: {time.time() - t0:.0f} s", flush=True)
    per_image["haematoxylin-Otsu + components"] = refs["per_image"]["otsu"]
    per_image["haematoxylin-Otsu + watershed"] = refs["per_image"]["otsu_watershed"]

    means = {name: _mean(scores) for name, scores in per_image.items()}
    best_name = max((n for n in means if not n.startswith("haematoxylin")), key=lambda n: means[n]["aji"])
    best = means[best_name]
    arch = {"deeplabv3": "DeepLabV3", "deeplabv3plus": "DeepLabV3+"}[cfg.model.architecture]
    any_result = next(iter(results.values()))
    crops = any_result["epochs_run"] * t.steps_per_epoch * t.batch_size
    lines = [
        (f"{arch} / {cfg.model.encoder} (OS{cfg.model.output_stride}) from `{cfg.init}` init, trained once per "
         f"target with the same configuration (`{' '.join([args.config, *args.overrides])}`): {any_result['epochs_run']} "
         f"epochs x {t.steps_per_epoch} steps x {t.batch_size} random {cfg.data.crop_size} px crops "
         f"({crops} crops) at {mpp} um/px on the {len(chosen)} `train` images; validated on the "
         f"{len(val_pairs)} `val` images ({', '.join(p.image_id for p in val_pairs)}) whole, by sliding window. "
         f"The best epoch is chosen by validation AJI (the same rule for every target); each model's "
         f"post-processing parameters are then chosen on the *training* images (grid search, mean AJI) and "
         f"stored in its `best.pt`. The classical references get the same treatment: Otsu's watershed "
         f"parameters are chosen on the training images too ({refs['watershed_params']})."),
        "",
        "Training time per target (min, CPU shared with other jobs): " + ", ".join(
            f"{k} {r['train_time_s'] / 60:.1f}" for k, r in results.items()) + ".",
        "",
        "Mean over the validation images:",
        "",
        "| method | AJI | PQ | DQ | SQ | detection F1 | Dice |",
        "|---|---|---|---|---|---|---|",
        *[_row(name, m) for name, m in means.items()],
        "",
        "Per image (AJI / PQ / Dice):",
        "",
        "| method | " + " | ".join(p.image_id for p in val_pairs) + " |",
        "|---|" + "---|" * len(val_pairs),
        *[f"| {name} | " + " | ".join(f"{s['aji']:.3f} / {s['pq']:.3f} / {s['dice']:.3f}" for s in scores) + " |"
          for name, scores in per_image.items()],
        "",
    ]
    reached = best["aji"] >= TARGET_AJI and best["pq"] >= TARGET_PQ and best["dice"] >= TARGET_DICE
    verdict = [f"Target (AJI >= {TARGET_AJI}, PQ >= {TARGET_PQ}, Dice >= {TARGET_DICE}, mean): best model "
               f"`{best_name}`: AJI {best['aji']:.3f}, PQ {best['pq']:.3f}, Dice {best['dice']:.3f}: "
               + ("**reached**." if reached else "**missed** by " + ", ".join(
                   f"{name} {goal - best[key]:.3f}" for name, key, goal in
                   (("AJI", "aji", TARGET_AJI), ("PQ", "pq", TARGET_PQ), ("Dice", "dice", TARGET_DICE))
                   if best[key] < goal) + ".")]
    lines += verdict
    lines += ["", "What limits it, measured on these runs: validation AJI per epoch (with the configured, untuned "
              "post-processing), and what the post-processing search on the training images added:", "",
              "| target | val AJI by epoch | AJI untuned -> tuned |", "|---|---|---|"]
    for target, r in results.items():
        history = json.loads((Path(r["out_dir"]) / "metrics.json").read_text())["history"]
        lines.append(f"| {target} | " + " ".join(f"{h['val_aji']:.2f}" for h in history)
                     + f" | {r['val_aji_untuned']:.3f} -> {r['val_aji']:.3f} |")
    if not args.no_doc:
        boundary = next((n for n in preds_by_name if not n.startswith("binary")), None)
        shown = [n for n in ("binary target + watershed", boundary) if n in preds_by_name]
        k = 0                                              # the first validation image: a fixed rule
        pic = save_comparison(IMG_DIR / f"{val_pairs[k].image_id}.jpg", val[k].image, val[k].instances,
                              [(f"{n} (AJI {per_image[n][k]['aji']:.3f})", preds_by_name[n][k]) for n in shown])
        lines += ["", f"![instances]({pic.relative_to(RESULTS.parent)})", "",
                  f"Validation image {val_pairs[k].image_id}: truth, then the predictions (green: nucleus pixels "
                  "found, red: false, blue: missed; yellow outlines: predicted nuclei, cyan: true nuclei)."]
    body = "\n".join(lines)
    print("\n" + body)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.out) / "instance_result.json", {"means": means, "per_image": per_image,
                                                                 "best": best_name, "reached": reached})
    if not args.no_doc:
        command = "python pipelines/instance_result.py " + shlex.join(
            [f"--config={args.config}", f"--targets={args.targets}", f"--out={args.out}", *args.overrides])
        write_section(SECTION, body, command, doc=RESULTS)
        print(f"wrote section {SECTION!r} of {RESULTS}")
    return {"means": means, "best": best_name, "reached": reached, "results": results}
