"""`histoclr data describe|verify`: write a data-root manifest, or check a data root against one."""

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
