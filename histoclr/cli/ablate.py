"""`histoclr ablate`: the init x freeze x label-budget x seed grid as MLflow child runs."""

from __future__ import annotations

import click

from histoclr.cli.options import tracking_uri_option


@click.command("ablate")
@click.argument("config_path", metavar="CONFIG", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@tracking_uri_option
@click.option("--sync-records", is_flag=True,
              help="Train nothing: write the records of finished cells to the config's records_dir and "
                   "restore recorded cells this tracking store lacks (safe while the sweep runs).")
def ablate(config_path: str, overrides: tuple[str, ...], tracking_uri: str | None, sync_records: bool) -> None:
    """Run (or resume) an ablation sweep from CONFIG (see configs/ablation/).

    One MLflow parent run for the sweep and one child run per cell with the same params
    (init, freeze, label_fraction, num_labeled, seed, encoder, pretrain_run_id) and final metrics
    (val_aji, val_pq, best_val_dice, val_f1, val_iou, train_time_s). Re-running skips finished
    cells. With `register_as` in CONFIG the best cell (by `select_metric`, default val_aji) is
    registered in the MLflow Model Registry (histoclr predict --model models:/NAME/VERSION). Prints
    the link to the experiment's runs in the MLflow UI. Overrides
    KEY=VALUE apply to the sweep config (seeds=[0,1]) or, prefixed with `finetune.`, to every
    cell's fine-tuning config (finetune.train.steps=50). Exit status 1 if any cell (or the registration) failed.
    With `records_dir` in CONFIG each finished cell is also written there as a small JSON record
    (commit it): a sweep on a fresh tracking store restores those cells instead of training them.
    """
    from histoclr.ablation.sweep import run_sweep
    from histoclr.ablation.sweep import sync_records as sync
    from histoclr.config import load_config
    from histoclr.config.ablation import AblationConfig
    from histoclr.tracking import runs_link

    sweep_over = [o for o in overrides if not o.startswith("finetune.")]
    cell_over = [o[len("finetune."):] for o in overrides if o.startswith("finetune.")]
    cfg = load_config(AblationConfig, config_path, sweep_over)
    if sync_records:
        sync(cfg, cell_over, tracking_uri=tracking_uri, echo=click.echo)
        return
    res = run_sweep(cfg, cell_over, tracking_uri=tracking_uri, echo=click.echo)
    click.echo(f"sweep {res.parent_run_id}: {len(res.finished)} ran, {len(res.reused)} already done, "
               f"{len(res.skipped)} skipped, {len(res.failed)} failed"
               + (f"; best cell registered as {res.registered}" if res.registered else ""))
    click.echo(runs_link(cfg.experiment, tracking_uri or cfg.tracking_uri))
    for cell, msg in res.failed:
        click.echo(f"  FAILED {cell.label}: {msg}", err=True)
    if res.register_error:
        click.echo(f"  not registered as {cfg.register_as!r}: {res.register_error}", err=True)
    if res.failed or res.register_error:
        raise SystemExit(1)
