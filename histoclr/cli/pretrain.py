"""`histoclr pretrain`: SimCLR on histology tiles (one process, or DDP under torchrun)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import click

from histoclr.cli.options import config_options, tracking_uri_option


@contextlib.contextmanager
def _warnings_to_stderr():
    """``warning: <message>`` lines for the histoclr loggers (e.g. unreadable tiles) on stderr."""
    logger = logging.getLogger("histoclr")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@click.command("pretrain")
@config_options(default=None)
@click.option("--resume", default=None, metavar="PATH|auto",
              help="Continue from a checkpoint file, or `auto`: <out_dir>/checkpoints/last.pt when "
              "it exists (else start fresh).")
@click.option("--resume-with-new-config", is_flag=True,
              help="Resume although the configuration differs from the checkpoint's (learning rate, "
              "schedule, steps, ...): the new values apply from the checkpoint's step on; the change "
              "is logged. Without it such a resume is refused with the list of changed keys.")
@tracking_uri_option
@click.pass_context
def pretrain(ctx: click.Context, config_path: Path | None, overrides: tuple[str, ...], resume: str | None,
             resume_with_new_config: bool, tracking_uri: str | None) -> None:
    """SimCLR-pretrain a ResNet encoder on histology tiles (tile manifests from `histoclr tile`).

    Trains on the tiles of `data.manifests` with stain-aware `histology` views, holds out a
    fraction of the SLIDES for label-free checks (positive-pair ranking against a random
    encoder, embedding map, nearest-neighbour montage), and writes <out_dir>/backbone.pt for
    `histoclr finetune-seg` plus resumable checkpoints; everything is tracked in MLflow.

    \b
    Examples:
      histoclr pretrain -c configs/pretrain/cpu.yaml data.manifests=[tiles/tiles.csv]
      histoclr pretrain -c configs/pretrain/cpu.yaml --resume auto
      torchrun --nproc_per_node 8 -m histoclr pretrain -c configs/pretrain/gpu_resnet50.yaml
    """
    from histoclr.config.loader import load_config
    from histoclr.config.pretrain import PretrainConfig
    from histoclr.io import check_output_dir
    from histoclr.tracking import check_tracking_uri

    cfg = load_config(PretrainConfig, config_path, overrides)
    source = ctx.get_parameter_source("tracking_uri")
    if tracking_uri and (source == click.core.ParameterSource.COMMANDLINE or cfg.tracking.tracking_uri is None):
        cfg.tracking.tracking_uri = tracking_uri
    main = int(os.environ.get("RANK", "0")) == 0
    echo = click.echo if main else (lambda *a, **k: None)
    if resume_with_new_config and resume is None:
        raise click.UsageError("--resume-with-new-config goes with --resume")
    # cheap checks before any data or model work: nothing is written when they fail
    if main and cfg.tracking.enabled:
        check_tracking_uri(cfg.tracking.tracking_uri)
    check_output_dir(cfg.out_dir)

    from histoclr.pretrain.run import prepare_data
    from histoclr.pretrain.run import pretrain as run_pretrain

    with _warnings_to_stderr():
        if resume is not None:
            _echo_resume(echo, cfg, resume)     # a bad checkpoint fails before the data work
        data = prepare_data(cfg)
        echo(f"pretrain: {data.describe()}")
        result = run_pretrain(cfg, resume=resume, data=data, allow_new_config=resume_with_new_config)
    m = result.metrics
    echo(f"backbone: {result.backbone_path}")
    echo(f"checkpoint: {result.checkpoint_path} (step {m.get('steps', '?')})")
    if "holdout_top1" in m:
        echo("held-out positive-pair ranking ({:.0f} tiles, {:.0f} slides): top-1 {:.3f} / top-5 {:.3f} / "
             "mean rank {:.1f}   random init: top-1 {:.3f} / top-5 {:.3f} / mean rank {:.1f}".format(
                 m["holdout_tiles"], m["holdout_slides"], m["holdout_top1"], m["holdout_top5"],
                 m["holdout_mean_rank"], m["holdout_top1_random"], m["holdout_top5_random"],
                 m["holdout_mean_rank_random"]))
    if m.get("bad_tiles"):
        echo(f"{int(m['bad_tiles'])} unreadable tile(s) skipped: see {Path(cfg.out_dir) / 'diagnostics' / 'bad_tiles.txt'}")
    if result.run_id:
        echo(f"mlflow run: {result.run_id}")


def _echo_resume(echo, cfg, resume: str) -> None:
    from histoclr.ssl.trainer import load_checkpoint

    path = Path(cfg.out_dir) / "checkpoints" / "last.pt" if resume == "auto" else Path(resume)
    if resume == "auto" and not path.is_file():
        echo(f"resume: no checkpoint at {path}; starting at step 0")
        return
    ckpt = load_checkpoint(path)
    echo(f"resume: {path}, starting at step {int(ckpt['step'])} of {cfg.train.max_steps}")
