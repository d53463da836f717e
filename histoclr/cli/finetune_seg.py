"""`histoclr finetune-seg`: fine-tune DeepLabV3 for nuclei from a SimCLR / ImageNet / random encoder."""

from __future__ import annotations

import os
from pathlib import Path

import click

from histoclr.cli.options import config_options, tracking_uri_option


@click.command("finetune-seg")
@config_options(default="configs/finetune/cpu.yaml")
@click.option("--init", default=None, metavar="random|imagenet|simclr:PATH",
              help="Encoder initialisation: random, imagenet (torchvision or --imagenet-weights) or "
              "simclr:PATH to a backbone file from `histoclr pretrain`. [config: init]")
@click.option("--imagenet-weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Local torchvision ResNet .pth for --init imagenet (needed offline).")
@click.option("--freeze", default=None, metavar="SPEC",
              help="Encoder stages to freeze: none, all, stem, layer1..layer4, ranges (layer1-2), "
              "lists (stem,layer1-3). [config: freeze]")
@click.option("--encoder-lr-mult", type=click.FloatRange(min=0), default=None,
              help="LR of the unfrozen encoder stages relative to the decoder. [config: encoder_lr_mult]")
@click.option("--num-labeled", type=click.IntRange(min=1), default=None,
              help="Use this many labelled training images (deterministic for a seed).")
@click.option("--label-fraction", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Use this fraction of the labelled training images (nested across fractions).")
@click.option("--seed", type=int, default=None, help="Seed of the label subset, crops and weights.")
@click.option("--pairs", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Pairs manifest CSV (histoclr seg-data). [config: pairs]")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the manifest's paths are relative to. [config: data_root]")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (best.pt, last.pt, overlays/, metrics.json). [config: out_dir]")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@tracking_uri_option
def finetune_seg(config_path: Path | None, overrides: tuple[str, ...], init, imagenet_weights, freeze,
                 encoder_lr_mult, num_labeled, label_fraction, seed, pairs, data_root, out, no_progress,
                 tracking_uri) -> None:
    """Fine-tune DeepLabV3 on a few nucleus masks; validate on whole images; log to MLflow.

    Writes OUT/best.pt (the model `histoclr predict` uses, best validation Dice), OUT/last.pt
    (re-running the same command resumes from it), overlay PNGs and metrics.json.

    \b
    Examples:
      histoclr finetune-seg --init simclr:runs/pretrain_cpu/backbone.pt --freeze layer1-2
      torchrun --nproc_per_node 8 -m histoclr finetune-seg -c configs/finetune/gpu_resnet50.yaml \\
          --init simclr:runs/pretrain_gpu_resnet50/backbone.pt train.sync_batchnorm=true
    """
    from histoclr.config.loader import load_config
    from histoclr.config.seg import FinetuneConfig
    from histoclr.errors import ConfigError
    if num_labeled is not None and label_fraction is not None:
        raise ConfigError("give at most one of --num-labeled and --label-fraction")
    cfg = load_config(FinetuneConfig, config_path, overrides)
    for name, value in (("init", init), ("freeze", freeze), ("encoder_lr_mult", encoder_lr_mult),
                        ("seed", seed)):
        if value is not None:
            setattr(cfg, name, value)
    if imagenet_weights is not None:
        cfg.imagenet_weights = str(imagenet_weights)
    if num_labeled is not None:
        cfg.num_labeled, cfg.label_fraction = num_labeled, None
    if label_fraction is not None:
        cfg.num_labeled, cfg.label_fraction = None, label_fraction
    for name, value in (("pairs", pairs), ("data_root", data_root), ("out_dir", out)):
        if value is not None:
            setattr(cfg, name, str(value))
    if tracking_uri:
        cfg.tracking.tracking_uri = tracking_uri
    cfg.validate()
    from histoclr.io import check_output_dir
    from histoclr.tracking import check_tracking_uri

    if cfg.tracking.enabled and int(os.environ.get("RANK", "0")) == 0:
        check_tracking_uri(cfg.tracking.tracking_uri)      # before any data or model work
    check_output_dir(cfg.out_dir)
    from histoclr.seg.train import run_finetune

    result = run_finetune(cfg, progress=not no_progress)
    if int(os.environ.get("RANK", "0")) != 0:      # under torchrun only rank 0 reports
        return
    click.echo(f"MLflow run {result['run_id']}: best_val_dice {result['best_val_dice']:.4f}, "
               f"val_iou {result['val_iou']:.4f}, val_aji {result['val_aji']:.4f}")
