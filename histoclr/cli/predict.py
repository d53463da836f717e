"""`histoclr predict`: apply a fine-tuned segmentation model to images or slide regions."""

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
@click.option("--model", "-m", "model_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="best.pt written by `histoclr finetune-seg`.")
@out_option(help="Folder for <name>_instances.png (or _mask.png with --binary) and <name>_overlay.png.")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Microns per pixel of the inputs (overrides their metadata).")
@click.option("--assume-mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Microns per pixel for inputs whose files do not record it.")
@click.option("--region", callback=_region, default=None, metavar="X,Y,W,H",
              help="Predict only this level-0 region of each slide (read through OpenSlide).")
@click.option("--mask-format", type=click.Choice(["png", "tiff"]), default="png", show_default=True)
@click.option("--binary", is_flag=True,
              help="Write the binary nucleus mask (0/255) instead of the instance labels.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Nucleus probability threshold [default: the one stored in the model].")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=0.25, show_default=True,
              help="Sliding-window overlap (fraction of the window).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.pass_context
def predict(ctx: click.Context, inputs: tuple[Path, ...], model_path: Path, out: Path, mpp, assume_mpp, region,
            mask_format, binary, threshold, overlap, batch_size, device) -> None:
    """Segment nuclei in INPUT images (PNG/JPEG/TIFF) or slide regions (--region) at the model's mpp.

    Writes each input's nucleus instance labels (16-bit PNG, or TIFF past 65,535 nuclei; --binary: the
    0/255 mask) and an overlay with every nucleus outlined, at the input's size, using the
    post-processing stored in the model (the one chosen when it was trained). A bad input prints one line naming it; the others are still
    processed and the exit status is 1 at the end.
    """
    import torch
    from tqdm import tqdm

    from histoclr.errors import ConfigError, HistoclrError
    from histoclr.seg.model import load_seg_checkpoint
    from histoclr.seg.predict import predict_file

    if mpp is not None and assume_mpp is not None:
        raise ConfigError("give at most one of --mpp and --assume-mpp")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ckpt = load_seg_checkpoint(model_path, device)
    click.echo(f"model {model_path}: {ckpt.model.spec.architecture} {ckpt.model.spec.encoder}, "
               f"{ckpt.mpp if ckpt.mpp is not None else 'native'} um/px, window {ckpt.window} px, "
               f"target {ckpt.model.spec.target}, post-processing {ckpt.postprocess.method}")
    failed = 0
    for path in tqdm(inputs, desc="predict", unit="image", disable=len(inputs) < 2):
        try:
            res = predict_file(ckpt, path, out, region=region, mpp=mpp, assume_mpp=assume_mpp,
                               mask_format=mask_format, binary=binary, threshold=threshold, overlap=overlap,
                               batch_size=batch_size, device=device)
        except HistoclrError as e:
            failed += 1
            tqdm.write(f"error: {e}", file=click.get_text_stream("stderr"))
            continue
        tqdm.write(f"{path}: {res['nuclei']} nuclei, {100 * res['foreground']:.1f}% foreground -> "
                   f"{res['mask']}, {res['overlay']}")
    if failed:
        click.echo(f"{failed} of {len(inputs)} input(s) failed", err=True)
        ctx.exit(1)
