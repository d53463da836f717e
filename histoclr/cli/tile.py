"""`histoclr tile`: whole-slide images -> tissue tiles + tiles.csv / slides.csv manifest."""

from __future__ import annotations

import re
from pathlib import Path

import click

from histoclr.cli.options import config_options, out_option, workers_option

_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")


def split_inputs(args: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Positional arguments -> (slide inputs, ``key=value`` config overrides)."""
    inputs, overrides = [], []
    for a in args:
        (overrides if _OVERRIDE.match(a) and not Path(a).exists() else inputs).append(a)
    return inputs, overrides


@click.command("tile")
@config_options(metavar="SLIDES... [KEY=VALUE]...")
@out_option(help="Output folder (tiles/, qc/, tiles.csv, slides.csv). Re-running the same "
            "command into it resumes: finished slides are skipped.")
@click.option("--recursive", "-r", is_flag=True, default=None,
              help="Also look for slides in the sub-folders of folder inputs.")
@click.option("--mpp", type=float, default=None,
              help="Target resolution of the tiles in µm/px (default 0.5): read from the coarsest "
              "pyramid level at or finer than it, then resize.")
@click.option("--level", type=int, default=None,
              help="Read this pyramid level as is instead of --mpp (0 = full resolution).")
@click.option("--assume-mpp", type=float, default=None,
              help="µm/px of slides whose files carry no resolution metadata (e.g. 0.2527 for "
              "MoNuSeg); the file's own metadata always wins.")
@click.option("--tile-size", type=int, default=None, help="Side of a tile in output pixels (default 224).")
@click.option("--stride", type=int, default=None,
              help="Grid step in output pixels (default: the tile size; smaller = overlap).")
@click.option("--min-tissue", type=float, default=None,
              help="Keep tiles whose tissue-mask fraction is at least this (0..1, default 0.5).")
@click.option("--format", "fmt", type=click.Choice(["png", "jpeg"]), default=None,
              help="Tile image format (default png).")
@click.option("--jpeg-quality", type=int, default=None, help="JPEG quality 1..100 (default 90).")
@click.option("--no-qc", is_flag=True, default=False, help="Do not write qc/<slide_id>.png.")
@workers_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def tile(ctx: click.Context, overrides: tuple[str, ...], config_path: Path | None, out: Path,
         recursive: bool | None, mpp: float | None, level: int | None, assume_mpp: float | None,
         tile_size: int | None, stride: int | None, min_tissue: float | None, fmt: str | None,
         jpeg_quality: int | None, no_qc: bool, workers: int, quiet: bool) -> None:
    """Cut SLIDES into tissue tiles and write a tile manifest.

    SLIDES are slide files (anything OpenSlide reads: svs, ndpi, mrxs, scn, pyramidal TIFF,
    DICOM; or plain tif/png/jpg images), folders of them, or CSV lists with a `path` column
    (relative to the CSV). Trailing KEY=VALUE pairs override the config
    (e.g. tissue.thumbnail_size=1024); command-line flags override both.

    Writes tiles/<slide_id>/<slide_id>_x<X>_y<Y>.png (X, Y: level-0 pixels), qc/<slide_id>.png
    (thumbnail, tissue mask, kept tiles), tiles.csv and slides.csv. A slide that cannot be read
    is reported in one line and recorded as failed; the others are tiled. Exit status: 0 all
    slides tiled, 1 some failed, 2 bad options or inputs (nothing done).

    \b
    Example:
      histoclr tile ../shared/data --recursive --mpp 0.5 --assume-mpp 0.2527 --out runs/tiles
    """
    from histoclr.config import load_config
    from histoclr.config.tile import TileConfig
    from histoclr.io import check_output_dir
    from histoclr.manifests.tiles import MANIFEST_NAME
    from histoclr.slides.inputs import find_slides
    from histoclr.slides.tiler import tile_slides

    inputs, kv = split_inputs(overrides)
    flags = {"recursive": recursive, "mpp": mpp, "level": level, "assume_mpp": assume_mpp,
             "tile_size": tile_size, "stride": stride, "min_tissue": min_tissue, "format": fmt,
             "jpeg_quality": jpeg_quality}
    kv += [f"{k}={v}" for k, v in flags.items() if v is not None]
    if level is not None and mpp is None:
        kv.append("mpp=null")
    if mpp is not None and level is None:
        kv.append("level=null")
    if no_qc:
        kv.append("qc=false")
    cfg = load_config(TileConfig, config_path, kv)
    check_output_dir(out)
    specs = find_slides(inputs, cfg.recursive)
    result = tile_slides(specs, cfg, out, workers=workers, progress=not quiet)
    skipped = f" ({result.skipped} already done)" if result.skipped else ""
    click.echo(f"{len(specs)} slide(s): {result.ok} ok{skipped}, {result.failed} failed; "
               f"{result.tiles} tiles -> {out / MANIFEST_NAME}")
    if result.failed:
        click.echo(f"FAILED: {result.failed} slide(s) could not be tiled (see slides.csv); "
                   "fix or remove them and re-run the same command to finish", err=True)
        ctx.exit(1)
