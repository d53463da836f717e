"""`histoclr seg-data check|describe`: inspect image/mask pairs, write a pairs manifest."""

from __future__ import annotations

from pathlib import Path

import click

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group("seg-data")
def seg_data() -> None:
    """Nucleus segmentation data: check image/mask pairs and write the pairs manifest."""


def _pair_line(pair, info) -> str:
    mpp = "mpp ?" if pair.mpp is None else f"mpp {pair.mpp:g}"
    split = pair.split or "-"
    skipped = f" ({info.skipped} degenerate skipped)" if info.skipped else ""
    return (f"ok       {pair.image_id}  {info.width}x{info.height}  {info.nuclei} nuclei{skipped}  "
            f"coverage {100 * info.coverage:.1f}%  {pair.mask_format}  split {split}  {mpp}")


@seg_data.command("check")
@click.option("--images", type=_DIR, help="Folder of images (matched to --masks by file stem).")
@click.option("--masks", type=_DIR, help="Folder of annotations (Aperio XML, GeoJSON, label PNG/TIFF).")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path),
              help="Pairs manifest CSV (instead of --images/--masks).")
@click.option("--root", type=_DIR, help="Data root the manifest's paths are relative to.")
@click.option("--preview", type=click.Path(file_okay=False, path_type=Path),
              help="Also write <image_id>.png with the nucleus outlines drawn into this folder.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def check(ctx: click.Context, images: Path | None, masks: Path | None, manifest: Path | None,
          root: Path | None, preview: Path | None, quiet: bool) -> None:
    """List the pairs found (size, nucleus count, coverage) and one line per problem.

    Give --images and --masks, or --manifest and --root. Exit status: 0 no problems,
    1 some problems, 2 unusable arguments or manifest.
    """
    from tqdm import tqdm

    from histoclr.errors import HistoclrError
    from histoclr.manifests.pairs import read_pairs_manifest
    from histoclr.seg.pairs import discover_pairs, inspect_pair

    by_dirs = images is not None or masks is not None
    if by_dirs == (manifest is not None or root is not None):
        raise HistoclrError("give either --images and --masks, or --manifest and --root")
    if by_dirs and (images is None or masks is None):
        raise HistoclrError("--images and --masks go together")
    if not by_dirs and (manifest is None or root is None):
        raise HistoclrError("--manifest and --root go together")

    problems: list[str] = []
    lines: list[str] = []
    ok_pairs = []
    if by_dirs:
        report = discover_pairs(images, masks, coverage=True, progress=not quiet)
        problems += report.problems
        for pair in report.pairs:
            lines.append(_pair_line(pair, report.info[pair.image_id]))
        ok_pairs = report.pairs
    else:
        pairs = read_pairs_manifest(manifest, root, check_files=False)
        for pair in tqdm(pairs, desc="annotations", unit="pair", disable=quiet):
            missing = [str(p) for p in (pair.image_path, pair.mask_path) if not p.is_file()]
            if missing:
                problems.append(f"{pair.image_id}: file(s) not found: {', '.join(missing)}")
                continue
            info = inspect_pair(pair, coverage=True)
            if isinstance(info, str):
                problems.append(f"{pair.image_id}: {info}")
                continue
            lines.append(_pair_line(pair, info))
            ok_pairs.append(pair)
    for line in lines:
        click.echo(line)
    for p in problems:
        click.echo(f"PROBLEM  {p}")
    if preview is not None and ok_pairs:
        from histoclr.images import read_rgb
        from histoclr.seg.annotations import load_instances
        from histoclr.seg.overlay import save_outline_png

        for pair in tqdm(ok_pairs, desc="previews", unit="png", disable=quiet):
            image = read_rgb(pair.image_path)
            inst = load_instances(pair.mask_path, pair.mask_format, image.shape[:2])
            save_outline_png(preview / f"{pair.image_id}.png", image, inst)
        click.echo(f"wrote {len(ok_pairs)} outline preview(s) to {preview}")
    click.echo(f"{len(ok_pairs)} pair(s) ok, {len(problems)} problem(s)")
    ctx.exit(1 if problems else 0)


@seg_data.command("describe")
@click.option("--images", required=True, type=_DIR, help="Folder of images.")
@click.option("--masks", required=True, type=_DIR, help="Folder of annotations (matched by stem).")
@click.option("--root", required=True, type=_DIR,
              help="Data root: the manifest stores paths relative to it.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Pairs manifest CSV to write.")
@click.option("--val", "val_ids", multiple=True, metavar="ID",
              help="Image id for the validation split (repeat; the others are train).")
@click.option("--test", "test_ids", multiple=True, metavar="ID",
              help="Image id for the test split (repeat).")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Microns per pixel for every image (default: the annotation's "
              "MicronsPerPixel where it has one, else empty).")
@click.pass_context
def describe(ctx: click.Context, images: Path, masks: Path, root: Path, out: Path,
             val_ids: tuple[str, ...], test_ids: tuple[str, ...], mpp: float | None) -> None:
    """Write a pairs manifest (image_id, image, mask, mask_format, split, mpp) for a data set.

    Pairs with problems are listed (one line each) and left out; the exit status is then 1.
    """
    from histoclr.errors import HistoclrError
    from histoclr.manifests.pairs import write_pairs_manifest
    from histoclr.seg.pairs import discover_pairs

    both = set(val_ids) & set(test_ids)
    if both:
        raise HistoclrError(f"image id(s) in both --val and --test: {', '.join(sorted(both))}")
    report = discover_pairs(images, masks)
    ids = {p.image_id for p in report.pairs}
    unknown = sorted((set(val_ids) | set(test_ids)) - ids)
    if unknown:
        raise HistoclrError(f"--val/--test id(s) not among the usable pairs: {', '.join(unknown)}")
    for pair in report.pairs:
        pair.split = ("val" if pair.image_id in val_ids else
                      "test" if pair.image_id in test_ids else "train")
        if mpp is not None:
            pair.mpp = mpp
    if not report.pairs:
        raise HistoclrError(f"no usable image/mask pairs in {images} and {masks}")
    write_pairs_manifest(report.pairs, out, root)
    for p in report.problems:
        click.echo(f"PROBLEM  {p}")
    counts = {s: sum(p.split == s for p in report.pairs) for s in ("train", "val", "test")}
    click.echo(f"wrote {out}: {len(report.pairs)} pairs ("
               + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ")"
               + (f"; {len(report.problems)} problem(s), those files left out"
                  if report.problems else ""))
    ctx.exit(1 if report.problems else 0)
