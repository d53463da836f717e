"""The tile manifest: the only way later stages see tiles.

A tiling output folder holds:

- ``tiles.csv``: first line ``# histoclr-tiles v<N>``, then a CSV header and one row per tile
  with :data:`TILE_COLUMNS`. ``tile_path`` is relative to the folder holding ``tiles.csv``.
- ``slides.csv``: one row per input slide with :data:`SLIDE_COLUMNS` (status ``ok`` or
  ``failed`` with the reason in ``error``).

See ``data_manifests/README.md`` for the meaning of every column.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Mapping

from histoclr.errors import InputFileError

MANIFEST_NAME = "tiles.csv"
SLIDES_NAME = "slides.csv"
MANIFEST_VERSION = 1
MANIFEST_MAGIC = "# histoclr-tiles v"

TILE_COLUMNS: tuple[str, ...] = (
    "slide_id",         # stable id of the slide (file stem, made unique)
    "slide_path",       # path of the slide file as given
    "x",                # level-0 x of the tile's top-left corner (pixels)
    "y",                # level-0 y of the tile's top-left corner (pixels)
    "level",            # pyramid level read from (0 = full resolution)
    "read_size",        # side of the square region read at `level` (pixels)
    "out_size",         # side of the written tile (pixels)
    "mpp",              # microns per pixel of the written tile
    "tissue_fraction",  # fraction of the tile covered by the tissue mask, 0..1
    "tile_path",        # tile image, relative to the manifest's folder
)

SLIDE_COLUMNS: tuple[str, ...] = (
    "slide_id", "slide_path", "file_size", "file_mtime", "width", "height", "mpp",
    "mpp_source", "vendor", "tile_count", "status", "error",
)


class ManifestError(InputFileError):
    """A manifest that cannot be used (wrong format version, missing columns, bad values)."""


def format_tiles_csv(rows: Iterable[Mapping]) -> str:
    """The text of a ``tiles.csv`` for ``rows`` (mappings with :data:`TILE_COLUMNS`)."""
    buf = io.StringIO()
    buf.write(f"{MANIFEST_MAGIC}{MANIFEST_VERSION}\n")
    w = csv.DictWriter(buf, fieldnames=TILE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def format_slides_csv(rows: Iterable[Mapping]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SLIDE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def read_tile_manifest(path: str | Path):
    """Read and check a ``tiles.csv`` (or the folder that holds one).

    Returns:
        A ``pandas.DataFrame`` with :data:`TILE_COLUMNS`; ``tile_path`` is made absolute.

    Raises:
        ManifestError: missing file, another format version, missing columns or bad values,
            always naming the file.
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(path, "tile manifest not found")
    with open(path, encoding="utf-8") as f:
        first = f.readline().strip()
    if not first.startswith(MANIFEST_MAGIC):
        raise ManifestError(
            path, f"not a histoclr tile manifest (first line should be '{MANIFEST_MAGIC}"
            f"{MANIFEST_VERSION}', found {first[:60]!r})")
    version = first[len(MANIFEST_MAGIC):]
    if version != str(MANIFEST_VERSION):
        raise ManifestError(
            path, f"manifest format version {version} is not supported (this histoclr reads "
            f"version {MANIFEST_VERSION}); re-run `histoclr tile`")
    try:
        df = pd.read_csv(path, skiprows=1, dtype={"slide_id": str, "slide_path": str, "tile_path": str})
    except Exception as e:  # pandas raises several types for malformed CSV
        raise ManifestError(path, f"cannot parse CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in TILE_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(path, f"missing column(s): {', '.join(missing)}")
    for col in ("x", "y", "level", "read_size", "out_size"):
        if not pd.api.types.is_integer_dtype(df[col]):
            raise ManifestError(path, f"column {col!r} must hold integers")
    root = path.parent
    df["tile_path"] = [str((root / p).resolve()) if not Path(p).is_absolute() else p
                       for p in df["tile_path"]]
    return df
