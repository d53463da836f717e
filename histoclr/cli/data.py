"""`histoclr data describe|verify|demo|fetch`: write a data-root manifest, check a data root against one,
write the built-in demo data root, download public data sets."""

from __future__ import annotations

from pathlib import Path

import click

_ROOT = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group("data")
def data() -> None:
    """Describe a data root in a manifest (sizes, sha256, roles, splits) and verify copies."""


@data.command("describe")
@click.argument("root", type=_ROOT)
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Manifest CSV to write.")
@click.option("--facts", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML list of rules {match: GLOB, organ/split/source/licence/mpp/"
              "magnification: value} for facts the files do not record themselves.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def describe(root: Path, out: Path, facts: Path | None, quiet: bool) -> None:
    """Write a manifest of every file under ROOT (path, bytes, sha256, role, split, mpp, ...)."""
    from collections import Counter

    from histoclr.dataroot import describe_root, load_facts
    from histoclr.io import atomic_write_text
    from histoclr.manifests.data import format_data_manifest

    rules = load_facts(facts) if facts else []
    rows = describe_root(root, rules, progress=not quiet)
    atomic_write_text(out, format_data_manifest(rows))
    roles = Counter(r["role"] for r in rows)
    splits = Counter(r["split"] for r in rows if r["role"] == "labeled_image" and r["split"])
    click.echo(f"wrote {out}: {len(rows)} files ("
               + ", ".join(f"{n} {role}" for role, n in sorted(roles.items())) + ")"
               + (("; labelled split " + ", ".join(f"{n} {s}" for s, n in sorted(splits.items())))
                  if splits else ""))


@data.command("demo")
@click.option("--root", "-r", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write: new, empty, or an earlier demo root.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same bytes.")
def demo(root: Path, seed: int) -> None:
    """Write the built-in demo data root (synthetic): a pyramidal slide, 8 tiles with nucleus
    annotations (Aperio XML, GeoJSON, label images), its pairs and data manifests."""
    from histoclr.demo import write_demo_root

    paths = write_demo_root(root, seed)
    click.echo(f"demo data root {paths.root} (synthetic, seed {seed}): slide {paths.slide}, pairs "
               f"manifest {paths.pairs}, data manifest {paths.manifest}; run the pipeline on it: "
               "make run DATA=demo")


@data.command("fetch")
@click.argument("name", required=False)
@click.option("--root", "-r", type=click.Path(file_okay=False, path_type=Path),
              help="Data root to download into (files go to their usual place under it).")
@click.option("--list", "list_", is_flag=True, help="List the data sets it knows, with licences.")
@click.option("--base-url", default=None, help="A mirror holding the files at their data-root paths.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def fetch(name: str | None, root: Path | None, list_: bool, base_url: str | None, quiet: bool) -> None:
    """Download public data set NAME into --root (sha256 checked, interrupted downloads resume) and
    describe its files in ROOT/fetched.csv for `histoclr data verify`."""
    from histoclr.fetch import fetch as fetch_dataset
    from histoclr.fetch import list_datasets

    if list_ or not name:
        for line in list_datasets():
            click.echo(line)
        if not list_:
            click.echo("usage: histoclr data fetch NAME --root DIR")
        return
    if root is None:
        raise click.UsageError("give --root DIR, the data root to download into")
    manifest = fetch_dataset(name, root, progress=not quiet, base_url=base_url, echo=click.echo)
    click.echo(f"described in {manifest}; check: histoclr data verify --root {root} {manifest}")


@data.command("verify")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--root", "-r", required=True, type=_ROOT,
              help="Data root the manifest's paths are relative to.")
@click.option("--size-only", is_flag=True, help="Compare sizes only (skip sha256; fast).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def verify(ctx: click.Context, manifest: Path, root: Path, size_only: bool, quiet: bool) -> None:
    """Check the files under --root against MANIFEST.

    Prints one line per missing or changed file and a summary. Exit status: 0 when every
    listed file matches, 1 when some are missing or changed, 2 when the manifest is unusable.
    """
    from histoclr.dataroot import verify_root
    from histoclr.manifests.data import read_data_manifest

    rows = read_data_manifest(manifest)
    report = verify_root(root, rows, size_only=size_only, progress=not quiet)
    for p in report.missing:
        click.echo(f"MISSING  {p}")
    for p, why in report.changed:
        click.echo(f"CHANGED  {p}: {why}")
    check = "size" if size_only else "size+sha256"
    summary = (f"{manifest}: {len(rows)} files checked ({check}) under {root}: "
               f"{len(report.ok)} ok, {len(report.missing)} missing, {len(report.changed)} changed")
    if report.extra:
        summary += f"; {len(report.extra)} file(s) not in the manifest (ignored)"
    click.echo(summary)
    click.echo("OK: the data root matches the manifest" if report.passed
               else "FAILED: the data root does not match the manifest")
    ctx.exit(0 if report.passed else 1)
