"""`histoclr predict`: apply a fine-tuned segmentation model to whole slides, slide regions or images."""

from __future__ import annotations

from pathlib import Path

import click

from histoclr.cli.options import out_option


def _region(ctx, param, value):
    if value is None:
        return None
    try:
        parts = tuple(int(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise click.BadParameter("expected x,y,w,h in level-0 pixels, e.g. 1000,1200,1024,1024")
    return parts


@click.command("predict")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "-m", "model", required=True, type=str,
              help="best.pt written by `histoclr finetune-seg`, or a models:/NAME/VERSION or runs:/ URI "
                   "(passed to the model loader as given).")
@out_option(help="Folder for <name>.geojson, <name>_nuclei.csv, <name>_overlay.png, <name>_summary.json "
                 "(and, for regions and images, <name>_instances.png).")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Microns per pixel of the inputs (overrides their metadata).")
@click.option("--assume-mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Microns per pixel for inputs whose files do not record it.")
@click.option("--region", callback=_region, default=None, metavar="X,Y,W,H",
              help="Predict only this level-0 region of each slide (every tile, no tissue detection).")
@click.option("--mask-format", type=click.Choice(["png", "tiff"]), default="png", show_default=True,
              help="Format of the level-0 labels of a region or image.")
@click.option("--binary", is_flag=True,
              help="Regions / images: write the binary nucleus mask (0/255) instead of the instance labels.")
@click.option("--mask-tiff", is_flag=True,
              help="Also write <name>_mask.tif: a pyramidal tiled instance mask (ids as 24-bit RGB, "
                   "id = R*65536 + G*256 + B) that OpenSlide and QuPath open.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Nucleus probability threshold [default: the one stored in the model].")
@click.option("--tile-size", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Side of a tile's core, in pixels at the model's mpp.")
@click.option("--halo", type=click.IntRange(min=0), default=64, show_default=True,
              help="Context read around each tile (model px); must exceed the largest nucleus radius.")
@click.option("--min-tissue", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Whole slides: run the tiles whose tissue fraction on the thumbnail exceeds this.")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=0.25, show_default=True,
              help="Sliding-window overlap (fraction of the window).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["model", "32", "bf16"]), default="model", show_default=True,
              help="Compute precision: 'model' is the one it was validated at (stored in the checkpoint); "
                   "32 on CPUs without bf16 units (no AMX / AVX512-BF16), where bf16 is slow.")
@click.option("--overwrite", is_flag=True,
              help="Redo inputs an earlier run finished with the same settings (default: skip them).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def predict(ctx: click.Context, inputs: tuple[Path, ...], model: str, out: Path, mpp, assume_mpp, region,
            mask_format, binary, mask_tiff, threshold, tile_size, halo, min_tissue, overlap, batch_size, device,
            precision, overwrite, no_progress) -> None:
    """Segment nuclei in whole slides (any OpenSlide format), slide regions (--region) or images
    (PNG/JPEG/TIFF) at the model's mpp, with the post-processing stored in the model.

    A whole slide is cut into tissue tiles (found on a thumbnail), run tile by tile with bounded
    memory and a progress bar; a nucleus cut by a tile border is reported once. Writes per input
    <name>.geojson (QuPath detections, level-0 px), <name>_nuclei.csv (one row per nucleus with its
    measurements), <name>_overlay.png and <name>_summary.json; regions and images also get their
    level-0 labels (16-bit PNG, TIFF past 65,535 nuclei; --binary: the 0/255 mask) as before. An
    interrupted input resumes from its finished tiles; one finished with the same settings is skipped
    unless --overwrite.
    A bad input prints one line naming it; the others are still processed and the exit status is 1
    at the end.
    """
    import torch

    from histoclr.errors import ConfigError, HistoclrError
    from histoclr.seg.model import load_seg_checkpoint
    from histoclr.seg.slide_predict import predict_input

    if mpp is not None and assume_mpp is not None:
        raise ConfigError("give at most one of --mpp and --assume-mpp")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ckpt = load_seg_checkpoint(model, device)
    if precision != "model":
        ckpt.model.set_compute(precision, ckpt.model.channels_last)
    click.echo(f"model {model}: {ckpt.model.spec.architecture} {ckpt.model.spec.encoder}, "
               f"{ckpt.mpp if ckpt.mpp is not None else 'native'} um/px, window {ckpt.window} px, "
               f"target {ckpt.model.spec.target}, post-processing {ckpt.postprocess.method}, "
               f"precision {ckpt.model.precision}")
    failed = 0
    for path in inputs:
        try:
            res = predict_input(ckpt, path, out, region=region, mpp=mpp, assume_mpp=assume_mpp,
                                mask_format=mask_format, binary=binary, mask_tiff=mask_tiff, threshold=threshold,
                                tile=tile_size, halo=halo, min_tissue=min_tissue, overlap=overlap,
                                batch_size=batch_size, device=device, overwrite=overwrite,
                                progress=not no_progress)
        except HistoclrError as e:
            failed += 1
            click.echo(f"error: {e}", err=True)
            continue
        if res.skipped:
            click.echo(f"{path}: finished earlier with these settings, skipped (--overwrite to redo): "
                       f"{res.summary_line()}")
            continue
        click.echo(f"{path}: {res.summary_line()}; {res.tiles} tiles in {res.seconds:.1f} s -> "
                   f"{', '.join(res.files.values())}")
    if failed:
        click.echo(f"{failed} of {len(inputs)} input(s) failed", err=True)
        ctx.exit(1)
