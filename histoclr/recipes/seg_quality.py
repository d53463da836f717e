"""Nucleus segmentation quality target: the CPU fine-tuning config vs the classical baseline.

    python pipelines/seg_quality_target.py [--config configs/finetune/cpu.yaml] [--init auto] [key=value ...]

Trains DeepLabV3 on the 10 ``train`` images of the pairs manifest, validates on the 3 ``val``
images, and scores the haematoxylin-Otsu baseline on the same validation images with the same
metrics, at the model's resolution (the pixels the model is scored on) and at native resolution.
Re-running resumes training from ``<out_dir>/last.pt``. Writes the section
"Nucleus segmentation quality target (CPU)" of docs/results.md (``--no-doc`` to skip).
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from histoclr.config import load_config
from histoclr.config.seg import FinetuneConfig
from histoclr.docs_sections import RESULTS, write_section
from histoclr.seg.baseline import baseline_scores
from histoclr.seg.dataset import load_pair
from histoclr.seg.model import load_seg_checkpoint
from histoclr.seg.train import evaluate, run_finetune, select_pairs

SECTION = "Nucleus segmentation quality target (CPU)"
DEFAULT_BACKBONE = "runs/pretrain_cpu/backbone.pt"
METRICS = ("dice", "iou", "pixel_acc", "aji")


def _mean(rows: list[dict]) -> dict:
    return {k: sum(r[k] for r in rows) / len(rows) for k in METRICS}


def _row(name: str, m: dict) -> str:
    return f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in METRICS) + " |"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/finetune/cpu.yaml")
    ap.add_argument("--init", default="auto",
                    help=f"random | imagenet | simclr:PATH | auto (simclr:{DEFAULT_BACKBONE} when it exists, else random)")
    ap.add_argument("--no-doc", action="store_true", help="Do not write docs/results.md.")
    ap.add_argument("overrides", nargs="*", help="FinetuneConfig key=value overrides")
    args = ap.parse_args(argv)

    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    if args.init == "auto":
        cfg.init = f"simclr:{DEFAULT_BACKBONE}" if Path(DEFAULT_BACKBONE).is_file() else "random"
    else:
        cfg.init = args.init
    cfg.validate()
    chosen, val_pairs, _ = select_pairs(cfg)
    print(f"init {cfg.init}; {len(chosen)} training images, {len(val_pairs)} validation images", flush=True)

    t0 = time.time()
    base_model_mpp = baseline_scores(val_pairs, cfg.data.mpp)
    base_native = baseline_scores(val_pairs, None)
    print(f"classical baseline ({time.time() - t0:.0f} s): dice {_mean(base_model_mpp)['dice']:.3f} "
          f"aji {_mean(base_model_mpp)['aji']:.3f} at the model's mpp", flush=True)

    result = run_finetune(cfg)

    # re-score the saved best.pt per image (the file `histoclr predict` would use)
    ckpt = load_seg_checkpoint(result["checkpoint"])
    loaded = [load_pair(p, cfg.data.mpp) for p in val_pairs]
    _, _, per_image = evaluate(ckpt.model, loaded, ckpt.window, cfg.train.val_overlap,
                                  cfg.train.val_batch_size, "cpu")
    model_mean = _mean(per_image)
    base_mean = _mean(base_model_mpp)
    beats = model_mean["dice"] > base_mean["dice"] and model_mean["aji"] > base_mean["aji"]
    crops = result["epochs_run"] * cfg.train.steps_per_epoch * cfg.train.batch_size
    res_mpp = f"{cfg.data.mpp} um/px" if cfg.data.mpp else "native resolution"
    init_desc = ("random initialisation (no SimCLR backbone existed yet)" if cfg.init == "random"
                 else f"`{cfg.init}`")

    arch = {"deeplabv3": "DeepLabV3", "deeplabv3plus": "DeepLabV3+"}[cfg.model.architecture]
    lines = [
        (f"{arch} / {cfg.model.encoder} (OS{cfg.model.output_stride}, {cfg.model.classes} classes, "
         f"CE + Dice) from {init_desc}, trained on the {len(chosen)} `train` images of "
         f"`{cfg.pairs}` and validated on the {len(val_pairs)} `val` images "
         f"({', '.join(p.image_id for p in val_pairs)}), whole images by sliding window "
         f"({cfg.data.crop_size} px windows, overlap {cfg.train.val_overlap}) at {res_mpp}."),
        (f"Training: {result['epochs_run']} epochs x {cfg.train.steps_per_epoch} steps x "
         f"{cfg.train.batch_size} random {cfg.data.crop_size} px crops = {crops} crops in "
         f"{result['train_time_s'] / 60:.1f} min ({crops / max(result['train_time_s'], 1e-9):.2f} crops/s "
         f"including validation; {cfg.train.threads or 'default'} torch thread(s), CPU shared with other "
         f"engineers' jobs); best epoch {result['best_epoch']}; MLflow run `{result['run_id']}`."),
        "",
        "Mean over the validation images (foreground Dice/IoU, pixel accuracy, AJI of connected components):",
        "",
        "| method | Dice | IoU | pixel acc | AJI |",
        "|---|---|---|---|---|",
        _row(f"{arch} {cfg.model.encoder}, fine-tuned ({res_mpp})", model_mean),
        _row(f"haematoxylin (rgb2hed) + Otsu ({res_mpp})", base_mean),
        _row("haematoxylin (rgb2hed) + Otsu (native 0.25 um/px)", _mean(base_native)),
        "",
        "Per image (Dice / AJI), model vs baseline at the model's resolution:",
        "",
        "| image | model Dice | model AJI | baseline Dice | baseline AJI |",
        "|---|---|---|---|---|",
    ]
    for p, m, b in zip(val_pairs, per_image, base_model_mpp):
        lines.append(f"| {p.image_id} | {m['dice']:.3f} | {m['aji']:.3f} | {b['dice']:.3f} | {b['aji']:.3f} |")
    lines += ["", ("The learned model beats the classical baseline on both Dice and AJI."
                   if beats else "The learned model does NOT beat the classical baseline on both Dice and AJI.")]
    body = "\n".join(lines)
    print("\n" + body)
    if not args.no_doc:
        command = "python pipelines/seg_quality_target.py " + shlex.join(
            [f"--config={args.config}", f"--init={args.init}", *args.overrides])
        write_section(SECTION, body, command, doc=RESULTS)
        print(f"wrote section {SECTION!r} of {RESULTS}")
    return {"model": model_mean, "baseline": base_mean, "beats": beats, **result}


if __name__ == "__main__":
    main()
